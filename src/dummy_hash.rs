//! The dummy hash unknown users are verified against, so that a login for a name nobody has
//! takes as long as one for a real user.
//!
//! Verification time depends on the algorithm and its parameters alone (bcrypt's cost; argon2's
//! variant, version, memory, passes, lanes and output length), and a users file can mix them:
//! imports from Rocket.Chat bring bcrypt, other tools bring argon2 with their own parameters.
//! The dummy takes the parameters most users in the file have (ties go to the costlier), so an
//! unknown name looks like the bulk of the users. It is derived whenever the users file is
//! loaded, at start and at every reload.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

const DUMMY_PASSWORD: &str = "authgate dummy password for unknown users";

/// What a stored hash costs to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashCost {
    Bcrypt {
        cost: u32,
    },
    Argon2 {
        algorithm: Algorithm,
        version: Version,
        memory_kib: u32,
        passes: u32,
        lanes: u32,
        output_len: usize,
    },
}

impl HashCost {
    /// The parameters of a stored hash; None for a format this gateway does not verify.
    pub fn of(hash: &str) -> Option<HashCost> {
        if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
            let parts = hash.parse::<bcrypt::HashParts>().ok()?;
            return Some(HashCost::Bcrypt {
                cost: parts.get_cost(),
            });
        }
        let parsed = PasswordHash::new(hash).ok()?;
        let params = Params::try_from(&parsed).ok()?;
        Some(HashCost::Argon2 {
            algorithm: Algorithm::try_from(parsed.algorithm).ok()?,
            version: parsed
                .version
                .map_or(Ok(Version::default()), Version::try_from)
                .ok()?,
            memory_kib: params.m_cost(),
            passes: params.t_cost(),
            lanes: params.p_cost(),
            output_len: parsed.hash.map_or(Params::DEFAULT_OUTPUT_LEN, |h| h.len()),
        })
    }

    /// A rough verification time in nanoseconds, only to order costs of different algorithms
    /// (bcrypt cost 10 ≈ 66 ms; argon2 ≈ 0.44 µs per KiB and pass on one core).
    fn rough_nanos(&self) -> u128 {
        match self {
            HashCost::Bcrypt { cost } => (1u128 << (*cost).min(31)) * 66_000,
            HashCost::Argon2 {
                memory_kib, passes, ..
            } => u128::from(*memory_kib) * u128::from(*passes) * 440,
        }
    }

    /// A hash of a throwaway password with exactly these parameters.
    fn dummy_hash(&self) -> Option<String> {
        match self {
            HashCost::Bcrypt { cost } => bcrypt::hash(DUMMY_PASSWORD, *cost).ok(),
            HashCost::Argon2 {
                algorithm,
                version,
                memory_kib,
                passes,
                lanes,
                output_len,
            } => {
                let params = Params::new(*memory_kib, *passes, *lanes, Some(*output_len)).ok()?;
                let salt = SaltString::generate(&mut OsRng);
                Argon2::new(*algorithm, *version, params)
                    .hash_password(DUMMY_PASSWORD.as_bytes(), &salt)
                    .ok()
                    .map(|h| h.to_string())
            }
        }
    }
}

/// The dummy for a users file's hashes: the parameters most of them share, the costlier on a
/// tie. None when there is no usable hash (the verifier's own dummy serves then).
pub fn dummy_for<'a>(hashes: impl IntoIterator<Item = &'a str>) -> Option<(String, HashCost)> {
    // A users file has a handful of distinct parameter sets at most.
    let mut counts: Vec<(HashCost, usize)> = Vec::new();
    for cost in hashes.into_iter().filter_map(HashCost::of) {
        match counts.iter_mut().find(|(seen, _)| *seen == cost) {
            Some((_, n)) => *n += 1,
            None => counts.push((cost, 1)),
        }
    }
    let (cost, _) = counts
        .into_iter()
        .max_by_key(|(cost, n)| (*n, cost.rough_nanos()))?;
    Some((cost.dummy_hash()?, cost))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argon2_hash(m: u32, t: u32, p: u32) -> String {
        let params = Params::new(m, t, p, None).unwrap();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"pw", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_dummy_takes_the_most_common_parameters() {
        let bcrypt5 = bcrypt::hash("pw", 5).unwrap();
        let argon = argon2_hash(512, 3, 2);
        let (dummy, cost) =
            dummy_for([bcrypt5.as_str(), argon.as_str(), bcrypt5.as_str()]).expect("a dummy");
        assert_eq!(cost, HashCost::Bcrypt { cost: 5 });
        assert!(dummy.starts_with("$2b$05$"), "{dummy}");
        assert!(crate::password::verify_blocking(
            &crate::password::Password::Plain(DUMMY_PASSWORD.into()),
            &dummy,
            crate::password::Prehash::None
        ));

        let (dummy, cost) =
            dummy_for([argon.as_str(), bcrypt5.as_str(), argon.as_str()]).expect("a dummy");
        assert_eq!(HashCost::of(&dummy), Some(cost.clone()));
        assert_eq!(
            cost,
            HashCost::Argon2 {
                algorithm: Algorithm::Argon2id,
                version: Version::V0x13,
                memory_kib: 512,
                passes: 3,
                lanes: 2,
                output_len: 32,
            }
        );
    }

    #[test]
    fn a_tie_goes_to_the_costlier_parameters() {
        let cheap = argon2_hash(256, 1, 1);
        let dearer = argon2_hash(1024, 2, 1);
        let (_, cost) = dummy_for([cheap.as_str(), dearer.as_str()]).unwrap();
        assert!(matches!(
            cost,
            HashCost::Argon2 {
                memory_kib: 1024,
                passes: 2,
                ..
            }
        ));
        let bcrypt6 = bcrypt::hash("pw", 6).unwrap();
        let (_, cost) = dummy_for([cheap.as_str(), bcrypt6.as_str()]).unwrap();
        assert_eq!(cost, HashCost::Bcrypt { cost: 6 });
    }

    #[test]
    fn no_usable_hash_gives_no_dummy() {
        assert!(dummy_for(["", "$md5$nope", "plain"]).is_none());
    }
}
