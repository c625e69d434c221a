//! argon2id password hashing, run off the async threads because each hash takes tens of
//! milliseconds of CPU and 19 MiB of memory. At most one hash per core runs at a time: a signup
//! or login storm queues here instead of spreading over hundreds of blocking threads, whose
//! allocator arenas kept gigabytes resident after a burst of 600 signups.

use std::sync::LazyLock;

use tokio::sync::Semaphore;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use crate::error::{AppError, AppResult};

/// Verified for unknown usernames so that a login takes as long whether or not the user exists.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| hash_blocking("not a real password"));

static HASHERS: LazyLock<Semaphore> = LazyLock::new(|| {
    Semaphore::new(
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    )
});

/// Runs `work` on the blocking pool once a hashing slot is free.
async fn hashing<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> AppResult<T> {
    let _slot = HASHERS
        .acquire()
        .await
        .map_err(|e| AppError::Internal(e.into()))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AppError::Internal(e.into()))
}

fn hash_blocking(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any input")
        .to_string()
}

pub async fn hash_password(password: String) -> AppResult<String> {
    hashing(move || hash_blocking(&password)).await
}

/// Checks `password` against `hash`; with no hash (unknown user) it checks against a dummy so
/// the answer takes the same time, and is always false.
pub async fn verify_password(password: String, hash: Option<String>) -> AppResult<bool> {
    hashing(move || {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.clone());
        let ok = PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && known
    })
    .await
}
