#!/usr/bin/env bash
# The long power-loss run: the relay's queue on lossyfs (tests/it/storage/
# lossyfs.rs) under submission and delivery load, cut CUTS times at random
# moments (kill -9, then every write not made durable is dropped), restarted
# on what survived; then every acknowledged message must have been delivered
# byte-identical and only messages in flight at a cut delivered twice.
# `cargo test` runs the same test with 4 cuts. Needs root (FUSE mount).
#   bash tests/powerloss.sh [CUTS] [SEED]     (defaults: 100, random)
set -euo pipefail
cd "$(dirname "$0")/.."
export DANERELAY_POWERLOSS_CUTS="${1:-100}"
export DANERELAY_POWERLOSS_SEED="${2:-0}"
cargo test --test it storage::powerloss::power_cuts -- --nocapture --exact \
    storage::powerloss::power_cuts_lose_nothing_acknowledged_and_repeat_only_what_was_in_flight
