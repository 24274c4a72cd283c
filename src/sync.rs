//! One way to take a std mutex. A panic while it was held (a bug, counted and logged by the supervisor)
//! leaves data that every holder keeps consistent between statements, so the daemon goes on with it rather
//! than spreading the panic to every later holder.

use std::sync::{Mutex, MutexGuard};

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The value of a mutex that is no longer shared.
pub fn into_inner<T>(mutex: Mutex<T>) -> T {
    mutex.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
}
