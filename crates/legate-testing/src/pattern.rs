//! A deterministic byte stream for transfer tests: the receiver regenerates what the sender
//! wrote and names the first offset that differs, which a checksum cannot do.

/// Byte `i` of the stream with `seed`: word `i / 8` of a splitmix64 sequence, little endian.
fn word(seed: u64, index: u64) -> [u8; 8] {
    let mut z = seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).to_le_bytes()
}

fn fill_at(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while i < buf.len() {
        let w = word(seed, pos / 8);
        let start = (pos % 8) as usize;
        let n = (8 - start).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&w[start..start + n]);
        i += n;
        pos += n as u64;
    }
}

/// Produces the stream in chunks.
#[derive(Debug)]
pub struct PatternWriter {
    seed: u64,
    offset: u64,
}

impl PatternWriter {
    /// The stream with `seed`, from offset 0.
    pub fn new(seed: u64) -> Self {
        Self { seed, offset: 0 }
    }

    /// Fills `buf` with the next `buf.len()` bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        fill_at(self.seed, self.offset, buf);
        self.offset += buf.len() as u64;
    }
}

/// Checks a received stream against the pattern, chunk by chunk.
#[derive(Debug)]
pub struct PatternChecker {
    seed: u64,
    offset: u64,
    scratch: Vec<u8>,
}

impl PatternChecker {
    /// Checks against the stream with `seed`, from offset 0.
    pub fn new(seed: u64) -> Self {
        Self { seed, offset: 0, scratch: Vec::new() }
    }

    /// Bytes checked so far.
    pub fn len(&self) -> u64 {
        self.offset
    }

    /// Whether nothing was checked yet.
    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }

    /// Checks the next chunk; the error names the first differing stream offset.
    pub fn check(&mut self, data: &[u8]) -> Result<(), String> {
        self.scratch.resize(data.len(), 0);
        fill_at(self.seed, self.offset, &mut self.scratch);
        if let Some(i) = data.iter().zip(&self.scratch).position(|(a, b)| a != b) {
            return Err(format!(
                "stream corrupted at offset {}: got byte {:#04x}, expected {:#04x}",
                self.offset + i as u64,
                data[i],
                self.scratch[i]
            ));
        }
        self.offset += data.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_does_not_change_the_stream() {
        let mut whole = vec![0; 100];
        PatternWriter::new(7).fill(&mut whole);
        let mut w = PatternWriter::new(7);
        let mut c = PatternChecker::new(7);
        for n in [3, 13, 1, 83] {
            let mut part = vec![0; n];
            w.fill(&mut part);
            c.check(&part).unwrap();
        }
        assert_eq!(c.len(), 100);
        let mut bad = whole.clone();
        bad[42] ^= 1;
        let err = PatternChecker::new(7).check(&bad).unwrap_err();
        assert!(err.contains("offset 42"), "{err}");
    }
}
