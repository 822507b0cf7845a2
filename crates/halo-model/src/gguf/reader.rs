//! A cursor over the bytes of a GGUF file. Every read checks the bytes remaining first, so a
//! field that claims more than the file holds is an error at the field, never a panic or an
//! allocation sized by the file.

use super::error::GgufError;

pub(crate) struct ByteReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> ByteReader<'a> {
        ByteReader { bytes, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The next `n` bytes; `what` names the field for the error when the file ends first.
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::TruncatedHeader {
                what: what.to_owned(),
                offset: self.pos,
                needed: n,
                remaining: self.remaining(),
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, GgufError> {
        self.array(what).map(u16::from_le_bytes)
    }
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }
    pub(crate) fn i8(&mut self, what: &str) -> Result<i8, GgufError> {
        self.array(what).map(i8::from_le_bytes)
    }
    pub(crate) fn i16(&mut self, what: &str) -> Result<i16, GgufError> {
        self.array(what).map(i16::from_le_bytes)
    }
    pub(crate) fn i32(&mut self, what: &str) -> Result<i32, GgufError> {
        self.array(what).map(i32::from_le_bytes)
    }
    pub(crate) fn i64(&mut self, what: &str) -> Result<i64, GgufError> {
        self.array(what).map(i64::from_le_bytes)
    }
    pub(crate) fn f32(&mut self, what: &str) -> Result<f32, GgufError> {
        self.array(what).map(f32::from_le_bytes)
    }
    pub(crate) fn f64(&mut self, what: &str) -> Result<f64, GgufError> {
        self.array(what).map(f64::from_le_bytes)
    }

    /// A count or length field, checked against the bytes left: each of the `count` items
    /// takes at least `min_item_bytes`, so a count the file cannot hold is an error here, before
    /// anything is allocated for it.
    pub(crate) fn count(&mut self, min_item_bytes: usize, what: &str) -> Result<usize, GgufError> {
        let at = self.pos;
        let n = self.u64(what)?;
        let fits = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(min_item_bytes.max(1)))
            .is_some_and(|bytes| bytes <= self.remaining());
        if !fits {
            return Err(GgufError::LengthPastEnd {
                what: what.to_owned(),
                offset: at,
                length: n,
                remaining: self.remaining(),
            });
        }
        Ok(n as usize)
    }

    /// A GGUF string: u64 byte length, then the bytes (not NUL-terminated).
    pub(crate) fn string_bytes(&mut self, what: &str) -> Result<&'a [u8], GgufError> {
        let n = self.count(1, what)?;
        self.take(n, what)
    }

    /// A string that must be UTF-8 (keys and tensor names).
    pub(crate) fn str(&mut self, what: &str) -> Result<&'a str, GgufError> {
        let at = self.pos;
        let bytes = self.string_bytes(what)?;
        std::str::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 {
            what: what.to_owned(),
            offset: at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_stops_at_the_end() {
        let mut r = ByteReader::new(&[1, 0, 0, 0, 2]);
        assert_eq!(r.u32("a").unwrap(), 1);
        assert!(matches!(
            r.u32("b"),
            Err(GgufError::TruncatedHeader {
                needed: 4,
                remaining: 1,
                ..
            })
        ));
    }

    #[test]
    fn a_huge_count_is_an_error_not_an_allocation() {
        let mut bytes = (1u64 << 60).to_le_bytes().to_vec();
        bytes.extend([0u8; 16]);
        let mut r = ByteReader::new(&bytes);
        assert!(matches!(
            r.count(8, "array"),
            Err(GgufError::LengthPastEnd { length, .. }) if length == 1 << 60
        ));
        let max = u64::MAX.to_le_bytes();
        let mut r = ByteReader::new(&max);
        assert!(r.string_bytes("s").is_err());
    }
}
