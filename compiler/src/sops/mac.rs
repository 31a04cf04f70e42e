//! The file MAC: SHA-512 over the plaintext of the document's leaves, as sops computes it.
//!
//! This module owns the hash itself and the form sops stores it in (upper-case hex, then
//! encrypted with the data key and the `lastmodified` string as additional data). Which leaves
//! are fed in, and in what order, is the tree walk's business.

use sha2::{Digest, Sha512};

use super::cipher::Scalar;

/// The 32 bytes sops feeds first when `mac_only_encrypted` is set (`sha256("sops")`), so that
/// such a MAC never equals an all-values MAC.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// Accumulates the MAC over leaves in walk order.
pub(crate) struct MacHasher {
    hash: Sha512,
    only_encrypted: bool,
}

impl MacHasher {
    pub(crate) fn new(only_encrypted: bool) -> Self {
        let mut hash = Sha512::new();
        if only_encrypted {
            hash.update(MAC_ONLY_ENCRYPTED_INIT);
        }
        Self {
            hash,
            only_encrypted,
        }
    }

    /// Adds one leaf. With `mac_only_encrypted`, leaves left in plaintext do not count.
    pub(crate) fn add(&mut self, scalar: &Scalar, encrypted: bool) {
        if !self.only_encrypted || encrypted {
            self.hash.update(&*scalar.to_bytes());
        }
    }

    /// The MAC as sops stores it before encryption: upper-case hex of the digest.
    pub(crate) fn finish(self) -> String {
        hex::encode_upper(self.hash.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_constant_is_sha256_of_sops() {
        assert_eq!(
            sha2::Sha256::digest(b"sops").as_slice(),
            MAC_ONLY_ENCRYPTED_INIT.as_slice()
        );
    }

    #[test]
    fn hashes_concatenated_leaf_bytes() {
        let mut mac = MacHasher::new(false);
        mac.add(&Scalar::Str("v1".into()), false);
        mac.add(&Scalar::Int(3), true);
        mac.add(&Scalar::Bool(true), true);
        assert_eq!(mac.finish(), hex::encode_upper(Sha512::digest(b"v13True")));
    }

    #[test]
    fn only_encrypted_skips_plain_leaves() {
        let mut mac = MacHasher::new(true);
        mac.add(&Scalar::Str("plain".into()), false);
        mac.add(&Scalar::Str("secret".into()), true);
        let mut expected = Sha512::new();
        expected.update(MAC_ONLY_ENCRYPTED_INIT);
        expected.update(b"secret");
        assert_eq!(mac.finish(), hex::encode_upper(expected.finalize()));
    }
}
