//! Password hashing (argon2id) and the one-time secrets of local sign-in:
//! generated passwords, TOTP (RFC 6238) and recovery codes.
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::Rng as _;

/// argon2id with OWASP's recommended minimum: 19 MiB of memory, 2 passes, 1 lane.
pub const MEMORY_KIB: u32 = 19 * 1024;
pub const PASSES: u32 = 2;
pub const LANES: u32 = 1;

/// TOTP codes are 6 digits over 30-second steps; one step either side is accepted.
const TOTP_DIGITS: u8 = 6;
const TOTP_STEP_SECONDS: u64 = 30;

fn hasher() -> Result<Argon2<'static>, String> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).map_err(|e| e.to_string())?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) of `password`.
pub fn hash(password: &str) -> Result<String, String> {
    Ok(hasher()?.hash_password(password.as_bytes()).map_err(|e| e.to_string())?.to_string())
}

/// Whether `password` matches the PHC string `phc` (its own parameters apply).
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    hasher().is_ok_and(|h| h.verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A random password of 24 characters from an unambiguous alphabet (~138 bits).
pub fn generate_password() -> String {
    random_from("abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789", 24)
}

/// A recovery code such as `k7q2-m9xp-4hrt` (60 bits), for one use only.
pub fn generate_recovery_code() -> String {
    let raw = random_from("abcdefghjkmnpqrstuvwxyz23456789", 12);
    format!("{}-{}-{}", &raw[0..4], &raw[4..8], &raw[8..12])
}

/// Recovery codes compare without dashes, spaces or case.
pub fn normalize_recovery_code(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

fn random_from(alphabet: &str, len: usize) -> String {
    let chars: Vec<char> = alphabet.chars().collect();
    let mut rng = rand::rngs::OsRng;
    (0..len).map(|_| chars[rng.gen_range(0..chars.len())]).collect()
}

/// A fresh 20-byte TOTP secret (RFC 4226's recommended length).
pub fn generate_totp_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 20];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    secret
}

fn totp(secret: &[u8], account: &str) -> Result<totp_rs::Totp, String> {
    totp_rs::Builder::new()
        .with_secret(secret.to_vec())
        .with_digits(TOTP_DIGITS)
        .with_step_duration(TOTP_STEP_SECONDS)
        .with_skew(1)
        .with_issuer(Some("docket"))
        .with_account_name(account.replace(':', ""))
        .build()
        .map_err(|e| format!("{e:?}"))
}

/// The `otpauth://` enrolment URI and the base32 secret for an authenticator app.
pub fn totp_enrolment(secret: &[u8], account: &str) -> Result<(String, String), String> {
    let t = totp(secret, account)?;
    let base32 = totp_rs::Secret::from(secret.to_vec()).to_base32();
    Ok((t.to_url().map_err(|e| format!("{e:?}"))?, base32))
}

/// The step a TOTP `code` matches at `unix_seconds`, if any. Callers refuse a
/// step already used (RFC 6238 §5.2).
pub fn totp_check(secret: &[u8], code: &str, unix_seconds: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != usize::from(TOTP_DIGITS) || !code.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    totp(secret, "check").ok()?.check(code, unix_seconds)
}

/// The bytes of a base32 TOTP secret as printed at enrolment.
pub fn totp_secret_from_base32(b32: &str) -> Option<Vec<u8>> {
    totp_rs::Secret::try_from_base32(b32.trim()).ok().map(|s| s.as_ref().to_vec())
}

/// The TOTP code at `unix_seconds` (what an authenticator app shows).
pub fn totp_code(secret: &[u8], unix_seconds: u64) -> Option<String> {
    Some(totp(secret, "code").ok()?.generate(unix_seconds).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse", &h));
        assert!(!verify("correct horsE", &h));
        assert!(!verify("x", "not a phc string"));
    }

    #[test]
    fn totp_matches_rfc6238_vector_and_refuses_garbage() {
        // RFC 6238 appendix B, SHA-1, T = 59 s → 94287082 (8 digits); the last 6 are 287082.
        let secret = b"12345678901234567890";
        assert_eq!(totp_code(secret, 59).as_deref(), Some("287082"));
        assert_eq!(totp_check(secret, "287082", 59), Some(1));
        assert_eq!(totp_check(secret, "287082", 59 + 30), Some(1), "one step of skew");
        assert_eq!(totp_check(secret, "287082", 59 + 90), None);
        assert_eq!(totp_check(secret, "28708", 59), None);
        assert_eq!(totp_check(secret, "abcdef", 59), None);
        let (uri, b32) = totp_enrolment(secret, "admin@firm.test").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/docket:admin%40firm.test?")
                || uri.starts_with("otpauth://totp/docket:admin@firm.test?"),
            "{uri}"
        );
        assert!(uri.contains(&format!("secret={b32}")), "{uri}");
    }

    #[test]
    fn generated_secrets_have_the_documented_shape() {
        let p = generate_password();
        assert_eq!(p.len(), 24);
        let c = generate_recovery_code();
        assert_eq!(c.len(), 14);
        assert_eq!(normalize_recovery_code(&c.to_uppercase().replace('-', " ")), c.replace('-', ""));
    }
}
