//! Public ids, fresh private ids and transfer tokens.

const ID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `len` characters from `[A-Za-z0-9]`.
pub(crate) fn random_id(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len)
        .map(|_| ID_CHARS[rng.usize(..ID_CHARS.len())] as char)
        .collect()
}

/// A new public id (8 characters) for which `taken` is false.
pub(crate) fn new_public_id(rng: &mut fastrand::Rng, taken: impl Fn(&str) -> bool) -> String {
    loop {
        let id = random_id(rng, 8);
        // All-digit ids would read as array indices to some clients (quirk Q11).
        if id.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if !taken(&id) {
            return id;
        }
    }
}

/// An unguessable token (128 bits from the OS), for session transfers.
pub(crate) fn secure_token() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back to a seeded generator rather than failing the handler.
        let mut rng = fastrand::Rng::new();
        rng.fill(&mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_ids_are_new_and_never_all_digits() {
        let mut rng = fastrand::Rng::with_seed(7);
        let first = new_public_id(&mut rng, |_| false);
        assert_eq!(first.len(), 8);
        let mut rng = fastrand::Rng::with_seed(7);
        let second = new_public_id(&mut rng, |id| id == first);
        assert_ne!(first, second);
        for _ in 0..1000 {
            let id = new_public_id(&mut rng, |_| false);
            assert!(!id.bytes().all(|b| b.is_ascii_digit()));
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
        let token = secure_token();
        assert_eq!(token.len(), 32);
        assert_ne!(token, secure_token());
    }
}
