//! Lower-case hexadecimal, for digests and ids in logs, keys and headers.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as hex into `out`, which holds two bytes per input byte. No allocation:
/// request ids are made this way on every request.
pub fn encode_into(bytes: &[u8], out: &mut [u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// `bytes` as a hex string.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    encode_into(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_formatter() {
        let bytes = [0x00, 0x01, 0x7f, 0x80, 0xab, 0xff];
        let formatted: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::encode(&bytes), formatted);
        let n = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128;
        let mut out = [0u8; 32];
        super::encode_into(&n.to_be_bytes(), &mut out);
        assert_eq!(std::str::from_utf8(&out).unwrap(), format!("{n:032x}"));
    }
}
