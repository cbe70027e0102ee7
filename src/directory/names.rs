//! How login names compare: the one folding every directory lookup and regulation key uses. A
//! leaf, so regulation can key on it without depending on the directories.

/// The form every login comparison (and regulation key) uses: Unicode compatibility caseless
/// matching (Unicode 3.13, D146: NFKC with full case folding), so fullwidth, mathematical and
/// differently cased spellings of a name are that name, as directory servers match them.
pub fn fold(s: &str) -> String {
    use caseless::Caseless;
    use unicode_normalization::UnicodeNormalization;
    s.trim()
        .nfd()
        .default_case_fold()
        .nfkd()
        .default_case_fold()
        .nfkc()
        .collect()
}
