//! RSA key generation for the tool's LTI 1.3 key on the embedded store
//! (DESIGN §13 "Tool key": generated once, kept beside the database).
//! `ring` signs and verifies RSA but does not generate keys, and the `rsa`
//! crate carries an open advisory, so the few steps are here: two random
//! primes (trial division, then Miller–Rabin), `e` = 65537,
//! `d` = e⁻¹ mod λ(n), the CRT values, and the PKCS#8 DER that `ring`
//! loads (and checks for consistency) like any configured key.
//!
//! Pure: the randomness comes in as a function filling a buffer.

use num_bigint::BigUint;
use num_integer::Integer as _;

/// The public exponent.
const E: u32 = 65_537;
/// Miller–Rabin rounds per prime candidate that passed trial division: a
/// composite survives one round with probability at most 1/4.
const ROUNDS: usize = 40;

/// Why no key was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeygenError {
    /// Only 2048 to 8192 bits in steps of 16 are made.
    #[error("an RSA key of {0} bits is not made here (2048 to 8192, a multiple of 16)")]
    Size(usize),
}

/// A new RSA private key of `bits` bits as PKCS#8 DER, with randomness
/// from `fill`.
pub fn generate_pkcs8(
    bits: usize,
    fill: &mut dyn FnMut(&mut [u8]),
) -> Result<Vec<u8>, KeygenError> {
    if !(2048..=8192).contains(&bits) || bits % 16 != 0 {
        return Err(KeygenError::Size(bits));
    }
    let small = small_primes(2000);
    let e = BigUint::from(E);
    let one = BigUint::from(1u32);
    loop {
        let p = random_prime(bits / 2, &small, fill);
        let q = random_prime(bits / 2, &small, fill);
        if p == q {
            continue;
        }
        // p > q by convention (qInv = q⁻¹ mod p either way).
        let (p, q) = if p > q { (p, q) } else { (q, p) };
        let n = &p * &q;
        if n.bits() as usize != bits {
            continue;
        }
        let (p1, q1) = (&p - &one, &q - &one);
        let lambda = p1.lcm(&q1);
        let Some(d) = e.modinv(&lambda) else {
            continue;
        };
        let Some(q_inv) = q.modinv(&p) else {
            continue;
        };
        let dp = &d % &p1;
        let dq = &d % &q1;
        let rsa_private_key = der_sequence(&[
            der_uint(&BigUint::from(0u32)),
            der_uint(&n),
            der_uint(&e),
            der_uint(&d),
            der_uint(&p),
            der_uint(&q),
            der_uint(&dp),
            der_uint(&dq),
            der_uint(&q_inv),
        ]);
        return Ok(wrap_pkcs8(&rsa_private_key));
    }
}

/// PKCS#8 `PrivateKeyInfo` around a PKCS#1 `RSAPrivateKey` (DER).
pub fn wrap_pkcs8(rsa_private_key: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }.
    const ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    der_sequence(&[
        vec![0x02, 0x01, 0x00],
        ALGORITHM.to_vec(),
        der_tlv(0x04, rsa_private_key),
    ])
}

/// PEM text of a PKCS#8 DER private key.
pub fn pkcs8_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// The primes below `limit`.
fn small_primes(limit: usize) -> Vec<u32> {
    let mut sieve = vec![true; limit];
    let mut primes = Vec::new();
    for i in 2..limit {
        if sieve[i] {
            primes.push(i as u32);
            let mut j = i * i;
            while j < limit {
                sieve[j] = false;
                j += i;
            }
        }
    }
    primes
}

/// A random prime of exactly `bits` bits whose two top bits are set (so a
/// product of two has twice the bits), with p − 1 prime to [`E`].
fn random_prime(bits: usize, small: &[u32], fill: &mut dyn FnMut(&mut [u8])) -> BigUint {
    let mut bytes = vec![0u8; bits.div_ceil(8)];
    loop {
        fill(&mut bytes);
        let excess = bytes.len() * 8 - bits;
        bytes[0] &= 0xff >> excess;
        bytes[0] |= 0xc0 >> excess;
        if let Some(last) = bytes.last_mut() {
            *last |= 1;
        }
        let candidate = BigUint::from_bytes_be(&bytes);
        if small.iter().any(|&s| (&candidate % s) == BigUint::ZERO) {
            continue;
        }
        if (&candidate % E) == BigUint::from(1u32) {
            continue;
        }
        if probably_prime(&candidate, fill) {
            return candidate;
        }
    }
}

/// Miller–Rabin with [`ROUNDS`] random bases.
fn probably_prime(n: &BigUint, fill: &mut dyn FnMut(&mut [u8])) -> bool {
    let one = BigUint::from(1u32);
    let two = BigUint::from(2u32);
    let n1 = n - &one;
    let s = n1.trailing_zeros().unwrap_or(0);
    let d = &n1 >> s;
    let mut bytes = vec![0u8; n.to_bytes_be().len()];
    let span = n - 3u32;
    'rounds: for _ in 0..ROUNDS {
        fill(&mut bytes);
        let a = BigUint::from_bytes_be(&bytes) % &span + &two;
        let mut x = a.modpow(&d, n);
        if x == one || x == n1 {
            continue;
        }
        for _ in 1..s {
            x = x.modpow(&two, n);
            if x == n1 {
                continue 'rounds;
            }
            if x == one {
                return false;
            }
        }
        return false;
    }
    true
}

/// DER tag, length and content.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let be = len.to_be_bytes();
        let skip = be.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (be.len() - skip) as u8);
        out.extend_from_slice(&be[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER of a non-negative value.
fn der_uint(v: &BigUint) -> Vec<u8> {
    let mut bytes = v.to_bytes_be();
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    der_tlv(0x02, &bytes)
}

/// A DER SEQUENCE of encoded elements.
fn der_sequence(elements: &[Vec<u8>]) -> Vec<u8> {
    der_tlv(0x30, &elements.concat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lti::jose::{JwkSet, SigningKey};

    /// A deterministic stream for repeatable tests (never for real keys).
    fn counter_fill(seed: u64) -> impl FnMut(&mut [u8]) {
        let mut state = seed;
        move |buf: &mut [u8]| {
            for b in buf.iter_mut() {
                // xorshift64*
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
            }
        }
    }

    #[test]
    fn a_generated_key_loads_signs_and_verifies() {
        let der = generate_pkcs8(2048, &mut counter_fill(7)).unwrap();
        let key = SigningKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(key.public_jwk().bits(), 2048);
        let token = key.sign(&serde_json::json!({"sub": "x"})).unwrap();
        let set = JwkSet::from_keys(vec![key.public_jwk().clone()]);
        let jws = crate::lti::jose::CompactJws::parse(&token).unwrap();
        assert!(jws.verify(&set).is_ok());
        // The PEM form reads back to the same key.
        let pem = pkcs8_pem(&der);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(again.kid(), key.kid());
        // Another stream, another key.
        let other = generate_pkcs8(2048, &mut counter_fill(8)).unwrap();
        assert_ne!(SigningKey::from_pkcs8_der(&other).unwrap().kid(), key.kid());
    }

    #[test]
    fn primality() {
        let small = small_primes(50);
        assert_eq!(
            small,
            [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47]
        );
        let mut fill = counter_fill(1);
        // 2^127 - 1 is prime; 2^128 + 1 is not (it is 59649589127497217 ×
        // 5704689200685129054721); nor a product of two, nor the Carmichael
        // number 41041.
        let m127 = (BigUint::from(1u32) << 127) - 1u32;
        assert!(probably_prime(&m127, &mut fill));
        let f7 = (BigUint::from(1u32) << 128) + 1u32;
        assert!(!probably_prime(&f7, &mut fill));
        assert!(!probably_prime(&BigUint::from(561u32 * 1105), &mut fill));
        assert!(!probably_prime(&BigUint::from(41_041u32), &mut fill));
        let p = random_prime(256, &small_primes(2000), &mut fill);
        assert_eq!(p.bits(), 256);
        assert!(p.bit(255) && p.bit(254) && p.bit(0));
    }

    #[test]
    fn sizes_and_der() {
        assert_eq!(
            generate_pkcs8(1024, &mut counter_fill(1)),
            Err(KeygenError::Size(1024))
        );
        assert_eq!(
            generate_pkcs8(2050, &mut counter_fill(1)),
            Err(KeygenError::Size(2050))
        );
        assert_eq!(der_uint(&BigUint::from(0u32)), [2, 1, 0]);
        assert_eq!(der_uint(&BigUint::from(0x80u32)), [2, 2, 0, 0x80]);
        assert_eq!(&der_tlv(4, &[0; 200])[..3], [4, 0x81, 200]);
        assert_eq!(&der_tlv(4, &[0; 300])[..4], [4, 0x82, 1, 44]);
    }
}
