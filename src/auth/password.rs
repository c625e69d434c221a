//! argon2id password hashing, run off the async threads because each hash takes tens of
//! milliseconds of CPU and 19 MiB of memory. At most one hash per core runs at a time: a signup
//! or login storm queues here instead of spreading over hundreds of blocking threads, whose
//! allocator arenas kept gigabytes resident after a burst of 600 signups.

use std::sync::{LazyLock, Mutex};

use tokio::sync::Semaphore;

use argon2::password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

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

/// Argon2's working memory (19 MiB with the default parameters), kept for the next hash instead
/// of being allocated afresh: the allocator kept every freed block resident, so a storm of
/// signups grew the process by hundreds of megabytes. At most one buffer per hashing slot
/// exists, because at most that many hashes run at once.
static MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Runs `f` with argon2 memory of at least `blocks` blocks, taken from [`MEMORY`] and put back.
fn with_memory<T>(blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    let reused = MEMORY.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let mut memory = reused.unwrap_or_default();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let result = f(&mut memory[..blocks]);
    MEMORY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(memory);
    result
}

/// argon2id with the crate's default parameters, into a PHC string.
fn hash_blocking(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    let argon = Argon2::default();
    let params = argon.params().clone();
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt
        .decode_b64(&mut salt_bytes)
        .expect("a generated salt decodes");
    let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    with_memory(params.block_count(), |memory| {
        argon.hash_password_into_with_memory(password.as_bytes(), salt_raw, &mut out, memory)
    })
    .expect("argon2 with default parameters hashes any input");
    PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::default().into()),
        params: ParamsString::try_from(&params).expect("default parameters encode"),
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).expect("argon2 output length is valid")),
    }
    .to_string()
}

/// Checks `password` against a PHC string, with the same reused memory as [`hash_blocking`].
fn verify_blocking(password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        return false;
    };
    let argon = match (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
        parsed.version.map(Version::try_from).transpose(),
    ) {
        (Ok(algorithm), Ok(params), Ok(version)) => {
            Argon2::new(algorithm, version.unwrap_or_default(), params)
        }
        _ => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_raw) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let hashed = with_memory(argon.params().block_count(), |memory| {
        argon.hash_password_into_with_memory(password.as_bytes(), salt_raw, &mut out, memory)
    });
    // `Output`'s equality is constant-time.
    hashed.is_ok() && Output::new(&out).is_ok_and(|actual| actual == expected)
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
        verify_blocking(&password, &hash) && known
    })
    .await
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[test]
    fn hashes_are_standard_phc_strings_that_the_argon2_crate_verifies_and_vice_versa() {
        let ours = hash_blocking("correct horse");
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        assert!(ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        assert!(verify_blocking("battery staple", &theirs));
        assert!(!verify_blocking("battery stapler", &theirs));
        assert!(!verify_blocking("correct horse", "not a hash"));
    }
}
