#!/usr/bin/env bash
# Session 5 GPU stage: fresh domain-randomised frames, hit/miss (local background) and five-class (hybrid)
# trained at once, each checkpoint copied to $OUT as soon as an epoch ends. Sizes come from the environment.
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  ln -sfn ../plugins sfx_cnnhit/plugins; ln -sfn ../comparisons sfx_cnnhit/comparisons
fi
export PY=${PY:-python3}; DEV=${DEV:-cuda}; N=${N:-4000}; LIMIT=${LIMIT:-470}
DETS="--simulate-detector square512 --simulate-detector square512 --simulate-detector square512 --simulate-detector cspad --simulate-detector pilatus6m:1000 --simulate-detector eiger:1000 --simulate-detector rayonix:1536 --simulate-detector epix10k2m"
cli() { "$PY" -c 'import sys; from sfx_cnnhit.cli.app import main; sys.argv[0] = "sfx-cnnhit"; main()' "$@"; }
watch() {  # copy $1/last.pt to $OUT/$2_eN.pt each time it changes
  local n=0 last=""
  while sleep 5; do
    [ -f "$1/last.pt" ] || continue
    local m; m=$(stat -c %Y "$1/last.pt")
    if [ "$m" != "$last" ]; then sleep 2; n=$((n+1)); cp "$1/last.pt" "$OUT/$2_e$n.pt"; last=$m; echo "copied $2 epoch $n"; fi
  done
}
watch /tmp/hm hm & W1=$!
watch /tmp/fc fc & W2=$!
timeout "$LIMIT" bash -c "$(declare -f cli); cli train --simulate $N --simulate-config randomised $DETS -j ${JHM:-10} --task hitmiss \
  --init ${INIT_HM:-hitnet_hitmiss} --mix 8 --epochs ${EHM:-3} --lr 1e-3 --lr-gamma ${GAMMA:-0.5} --seed ${SEED:-51} --augment ${AUG:-spot_safe} --device $DEV \
  -o /tmp/hm.pt --workdir /tmp/hm" > "$OUT/hm.log" 2>&1 &
A=$!
[ -n "${SKIP_FC:-}" ] && { wait $A; sleep 8; kill $W1 $W2; tail -c 600 "$OUT/hm.log"; ls -la "$OUT"; exit 0; }
timeout "$LIMIT" bash -c "$(declare -f cli); cli train --simulate $N --simulate-config randomised $DETS -j ${JFC:-6} --task fiveclass \
  --background hybrid --init ${INIT_FC:-hitnet_fiveclass} --mix 8 --epochs ${EFC:-2} --lr 1e-3 --lr-gamma 0.5 --seed 61 --augment label_safe \
  --device $DEV -o /tmp/fc.pt --workdir /tmp/fc" > "$OUT/fc.log" 2>&1 &
B=$!
wait $A $B
sleep 8; kill $W1 $W2
nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null
tail -c 1500 "$OUT/hm.log"; tail -c 1500 "$OUT/fc.log"; ls -la "$OUT"
