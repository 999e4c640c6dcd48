//! The report MAC: AES-128-CMAC over the first 384 bytes of a REPORT, keyed with the target
//! enclave's report key.

use aes::Aes128;
use cmac::{Cmac, Mac};
use subtle::ConstantTimeEq;

use crate::sgx::{Report, ReportMac};
use crate::Key128;

/// AES-128-CMAC (RFC 4493) of `msg`.
pub fn cmac_aes128(key: &Key128, msg: &[u8]) -> [u8; 16] {
    let mut mac = <Cmac<Aes128> as Mac>::new_from_slice(key.expose()).expect("16-byte key");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// The MAC a report must carry when made for the enclave that owns `report_key`.
pub fn report_mac(report_key: &Key128, report: &Report) -> ReportMac {
    ReportMac(cmac_aes128(report_key, &report.body()))
}

/// Checks a report's MAC in constant time.
pub fn report_mac_matches(report_key: &Key128, report: &Report) -> bool {
    let expected = report_mac(report_key, report);
    bool::from(expected.0.ct_eq(&report.mac.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    /// RFC 4493 §4 test vectors.
    #[test]
    fn rfc4493_known_answers() {
        let key = Key128::new(h("2b7e1516 28aed2a6 abf71588 09cf4f3c").try_into().unwrap());
        let m = h(
            "6bc1bee2 2e409f96 e93d7e11 7393172a ae2d8a57 1e03ac9c 9eb76fac 45af8e51 \
                   30c81c46 a35ce411 e5fbc119 1a0a52ef f69f2445 df4f9b17 ad2b417b e66c3710",
        );
        let cases: [(usize, &str); 4] = [
            (0, "bb1d6929 e9593728 7fa37d12 9b756746"),
            (16, "070a16b4 6b4d4144 f79bdd9d d04a287c"),
            (40, "dfa66747 de9ae630 30ca3261 1497c827"),
            (64, "51f0bebf 7e3b9d92 fc497417 79363cfe"),
        ];
        for (len, want) in cases {
            assert_eq!(
                cmac_aes128(&key, &m[..len]).to_vec(),
                h(want),
                "message length {len}"
            );
        }
    }
}
