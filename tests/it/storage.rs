//! The queue's storage failing under the real binary (issue #24): a full
//! volume (ENOSPC, also inside sled's log writer) that is then grown, free
//! space under `queue.min_free_space`, and power loss (see `powerloss`).
//! Volumes are tmpfs mounts and a FUSE filesystem of our own, so these tests
//! need root (`require_mounts`).

mod enospc;
mod lossyfs;
mod powerloss;
mod relay;
mod sink;
