//! Multibase text as DC's tools use it: `b` followed by RFC 4648 base32, lowercase, no
//! padding.

use data_encoding::BASE32_NOPAD;

pub fn encode(bytes: &[u8]) -> String {
    format!("b{}", BASE32_NOPAD.encode(bytes).to_ascii_lowercase())
}

/// Decodes `b…` base32 (either case after the prefix); other multibase prefixes are refused.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    let rest = text
        .strip_prefix('b')
        .ok_or_else(|| format!("{text:?} is not multibase base32 (must start with 'b')"))?;
    if rest.len() > 4096 {
        return Err("multibase text too long".into());
    }
    BASE32_NOPAD
        .decode(rest.to_ascii_uppercase().as_bytes())
        .map_err(|e| format!("invalid base32 in {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors_lowercase_unpadded() {
        // RFC 4648 §10: BASE32("foobar") = "MZXW6YTBOI======"
        assert_eq!(encode(b"foobar"), "bmzxw6ytboi");
        assert_eq!(decode("bmzxw6ytboi").unwrap(), b"foobar");
        assert_eq!(decode("bMZXW6YTBOI").unwrap(), b"foobar");
        assert!(decode("zabc").is_err());
        assert!(decode("b0189").is_err());
    }
}
