//! Poison-tolerant locking, one helper for the whole crate.
//!
//! A panic while a lock is held poisons it; every state guarded here stays
//! consistent between statements (maps, counters, a current certificate), so
//! the next user takes the data as it is rather than panicking in turn.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, taking the data of a poisoned mutex as it is.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks `l`, taking the data of a poisoned lock as it is.
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks `l`, taking the data of a poisoned lock as it is.
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_still_yields_its_data() {
        let m = Mutex::new(1);
        let _ = std::panic::catch_unwind(|| {
            let _g = lock(&m);
            panic!("poison it");
        });
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }

    #[test]
    fn a_poisoned_rwlock_still_yields_its_data() {
        let l = RwLock::new(1);
        let _ = std::panic::catch_unwind(|| {
            let _g = write(&l);
            panic!("poison it");
        });
        assert!(l.is_poisoned());
        *write(&l) += 1;
        assert_eq!(*read(&l), 2);
    }
}
