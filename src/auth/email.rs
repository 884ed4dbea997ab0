//! The one normal form of an email address. Every email docket stores or
//! matches (members, the break-glass admin, identity-provider claims, the
//! `logins` index) goes through [`normalize`] first, so two spellings are one
//! address exactly when their normal forms are equal.
//!
//! - Nothing is trimmed: whitespace or control characters anywhere refuse
//!   the address (a padded `" alice@firm.test"` is not alice).
//! - Exactly one `@`, a non-empty local part, a domain with a dot.
//! - The local part is ASCII letters, digits and ``.!#$%&'*+-/=?^_`{|}~``;
//!   ASCII letters are lower-cased. Non-ASCII local parts are refused, so no
//!   Unicode case folding can turn one address into another
//!   (`\u{212A}ate@firm.test`, KELVIN SIGN, is refused, never `kate`).
//! - The domain is converted to ASCII with IDNA (UTS 46, strict), so
//!   `bücher.test` is stored as `xn--bcher-kva.test`; ASCII letters may come
//!   in any case. A non-ASCII domain must already be in its IDNA normal form:
//!   one that IDNA maps to another spelling (`\u{212A}irm.test`, `BÜCHER.test`)
//!   is refused rather than folded.
//! - At most [`MAX_LEN`] characters in the normal form.

/// The longest address accepted (RFC 5321 path limit less the brackets).
pub const MAX_LEN: usize = 254;

/// Characters allowed in the local part besides ASCII letters and digits.
const LOCAL_SPECIALS: &str = ".!#$%&'*+-/=?^_`{|}~";

/// The normal form of `email`, or why it is not an address docket accepts.
pub fn normalize(email: &str) -> Result<String, String> {
    let shown = shown(email);
    if email.trim() != email {
        return Err(format!("`{shown}` has spaces before or after it; send the address without them"));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{shown}` contains spaces or control characters; an email address has none"));
    }
    let (local, domain) = match email.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => (local, domain),
        _ => return Err(format!("`{shown}` is not an email address (expected one `name@domain`)")),
    };
    if !local.chars().all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c)) {
        return Err(format!(
            "`{shown}`: the part before @ may hold only ASCII letters, digits and {LOCAL_SPECIALS} (internationalized names are not accepted)"
        ));
    }
    let domain = normalize_domain(domain).map_err(|problem| format!("`{shown}`: {problem}"))?;
    let normal = format!("{}@{domain}", local.to_ascii_lowercase());
    if normal.len() > MAX_LEN {
        return Err(format!("`{shown}` is longer than {MAX_LEN} characters"));
    }
    Ok(normal)
}

/// The normal form of a domain name: IDNA to ASCII (punycode), lower case.
pub fn normalize_domain(domain: &str) -> Result<String, String> {
    let shown = shown(domain);
    let ascii = idna::domain_to_ascii_strict(domain)
        .map_err(|_| format!("the domain `{shown}` is not a valid domain name"))?
        .to_ascii_lowercase();
    if !domain.is_ascii() {
        let (unicode, result) = idna::domain_to_unicode(&ascii);
        if result.is_err() || unicode != domain {
            return Err(format!(
                "the domain `{shown}` is not in its IDNA normal form; write it as `{unicode}` (or `{ascii}`)"
            ));
        }
    }
    let labels_ok = ascii.split('.').all(|label| !label.is_empty());
    if !ascii.contains('.') || !labels_ok {
        return Err(format!("the domain `{shown}` is not a full domain name (such as firm.com)"));
    }
    Ok(ascii)
}

/// `value` as an error message shows it: escaped, and cut at 100 characters.
fn shown(value: &str) -> String {
    let cut: String = value.chars().take(100).collect();
    let more = if cut.len() < value.len() { "…" } else { "" };
    format!("{}{more}", cut.escape_debug())
}

/// The form stores written before this normal form used for the same
/// address (the domain in Unicode), if it differs; `normal` is a normal form.
pub fn legacy_form(normal: &str) -> Option<String> {
    let (local, domain) = normal.split_once('@')?;
    let (unicode, result) = idna::domain_to_unicode(domain);
    (result.is_ok() && unicode != domain).then(|| format!("{local}@{unicode}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_addresses_are_lower_cased() {
        assert_eq!(normalize("Kate@Firm.Test").unwrap(), "kate@firm.test");
        assert_eq!(normalize("o'neil+docket@firm.co.uk").unwrap(), "o'neil+docket@firm.co.uk");
    }

    #[test]
    fn unicode_case_folding_never_makes_another_address() {
        for folded in
            ["\u{212A}ate@firm.test", "kate@\u{212A}irm.test", "K\u{0130}M@firm.test", "ka\u{0301}te@firm.test"]
        {
            assert!(normalize(folded).is_err(), "{folded}");
        }
        let e = normalize("kate@\u{212A}irm.test").unwrap_err();
        assert!(e.contains("normal form") && e.contains("kirm.test"), "{e}");
    }

    #[test]
    fn padding_and_inner_whitespace_are_refused_not_trimmed() {
        for padded in [" alice@firm.test", "alice@firm.test ", "alice@firm.test\n", "\u{a0}alice@firm.test"] {
            let e = normalize(padded).unwrap_err();
            assert!(e.contains("spaces"), "{padded:?}: {e}");
        }
        assert!(normalize("al ice@firm.test").unwrap_err().contains("spaces"));
        assert!(normalize("alice@firm.test\u{200b}").is_err(), "zero-width space");
    }

    #[test]
    fn international_domains_are_stored_in_punycode() {
        assert_eq!(normalize("bob@bücher.test").unwrap(), "bob@xn--bcher-kva.test");
        assert_eq!(normalize("bob@XN--BCHER-KVA.test").unwrap(), "bob@xn--bcher-kva.test");
        assert!(normalize("bob@BÜCHER.test").unwrap_err().contains("bücher.test"));
        assert_eq!(legacy_form("bob@xn--bcher-kva.test").as_deref(), Some("bob@bücher.test"));
        assert_eq!(legacy_form("bob@firm.test"), None);
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "",
            "@firm.test",
            "alice@",
            "alice",
            "a@evil.test@firm.test",
            "\"a\"@firm.test",
            "alice@firm",
            "alice@.firm.test",
            "alice@firm.test.",
            "alice@firm..test",
            "alice@fi_rm.test",
        ] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
        let long = format!("{}@firm.test", "a".repeat(250));
        assert!(normalize(&long).unwrap_err().contains("254"));
    }
}
