//! A CSV record reader with the exact field semantics of the `csv` crate's default reader
//! (`,` delimiter, `"` quotes doubled to escape, `\r`, `\n` and `\r\n` terminators, blank
//! lines skipped, flexible record lengths), scanning fields with `memchr` instead of a
//! byte-at-a-time state machine: parsing was the largest single cost of an import. A
//! differential test checks its records against `csv` on random input.
//!
//! Record positions are *physical lines* of the record's first byte, counting `\n`, `\r\n`
//! and a lone `\r` each as one line break (the `csv` crate counts only `\n`, and reports the
//! position before blank lines and before the `\n` of a `\r\n`, so a CRLF file's record on
//! line N said N-1 and a CR file's records all said 1). The record's original bytes are kept
//! until the next read ([`FastCsv::raw`]), and a quoted field left open at the end of the input
//! is reported ([`FastCsv::unterminated`]).

use std::io::Read;

use csv::{ByteRecord, Position};

/// Bytes read from the input at a time (the buffer grows for a longer record).
const CHUNK: usize = 256 * 1024;

pub struct FastCsv<R> {
    input: R,
    buf: Vec<u8>,
    /// Unparsed bytes are `buf[at..end]`.
    at: usize,
    end: usize,
    eof: bool,
    /// Lines (`\n`) consumed so far, plus one: the `csv` crate's line counter.
    line: u64,
    /// Bytes consumed before `buf[0]`.
    base: u64,
    /// The last record ended on `\r`: a `\n` right after it belongs to that terminator.
    after_cr: bool,
    /// Unescaped text of a quoted field with doubled quotes.
    scratch: Vec<u8>,
    chunk: usize,
    /// The last record's bytes: `buf[raw.0..raw.1]` (without its terminator).
    raw: (usize, usize),
    /// The last record had a quote opened on this line and never closed, swallowing this many
    /// line breaks up to the end of the input.
    unterminated: Option<(u64, u64)>,
    /// Most bytes one record may take; a longer one is skipped, never held whole.
    max_record: usize,
    /// The last `NeedMore` came from inside a quoted field.
    need_quoted: bool,
    /// The record last "read" was too long: its line and the bytes skipped (see
    /// [`FastCsv::oversized`]).
    oversized: Option<Oversized>,
}

/// A record longer than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized {
    /// The physical line the record starts on.
    pub line: u64,
    /// Bytes of the record seen (skipped) before its end or the point reading stopped.
    pub bytes: u64,
    /// It was inside a quoted field: where the record ends cannot be known, so reading stops.
    pub quoted: bool,
}

/// How parsing the bytes at hand went.
enum Parsed {
    /// A record, ending at this offset of `buf`.
    Record(usize),
    /// The record runs past the bytes read so far.
    NeedMore,
    /// Only blank lines (or nothing) were left.
    End,
}

impl<R: Read> FastCsv<R> {
    pub fn new(input: R) -> FastCsv<R> {
        FastCsv::with_chunk(input, CHUNK)
    }

    /// A reader that holds at most about `max_record` bytes of one record: a longer record
    /// outside quotes is skipped to the next line break and reported by
    /// [`FastCsv::oversized`] (its fields are empty); inside a quoted field, where the record
    /// ends is unknowable, so reading fails.
    pub fn with_limit(input: R, max_record: usize) -> FastCsv<R> {
        let mut r = FastCsv::with_chunk(input, CHUNK.min(max_record.max(1)));
        r.max_record = max_record.max(1);
        r
    }

    fn with_chunk(input: R, chunk: usize) -> FastCsv<R> {
        FastCsv {
            input,
            buf: Vec::new(),
            at: 0,
            end: 0,
            eof: false,
            line: 1,
            base: 0,
            after_cr: false,
            scratch: Vec::new(),
            chunk: chunk.max(1),
            raw: (0, 0),
            unterminated: None,
            max_record: usize::MAX,
            need_quoted: false,
            oversized: None,
        }
    }

    /// When the record last read was over the limit: where it started and what was skipped.
    /// The record itself comes back with no fields.
    pub fn oversized(&self) -> Option<Oversized> {
        self.oversized
    }

    /// The original bytes of the record last read (without its line terminator).
    pub fn raw(&self) -> &[u8] {
        self.buf.get(self.raw.0..self.raw.1).unwrap_or_default()
    }

    /// When the record last read ends in a quoted field that was never closed: the line the
    /// quote opened on and the number of line breaks it swallowed.
    pub fn unterminated(&self) -> Option<(u64, u64)> {
        self.unterminated
    }

    /// Where the next record starts, as `csv::Reader::position` says.
    pub fn position(&self) -> Position {
        let mut p = Position::new();
        p.set_line(self.line).set_byte(self.base + self.at as u64);
        p
    }

    /// The next record into `rec` (`false` at the end), as `csv::Reader::read_byte_record`;
    /// its position is the physical line and byte offset of its first byte.
    pub fn read_byte_record(&mut self, rec: &mut ByteRecord) -> csv::Result<bool> {
        self.oversized = None;
        loop {
            rec.clear();
            self.unterminated = None;
            match self.parse(rec) {
                Parsed::Record(to) => {
                    self.at = to;
                    return Ok(true);
                }
                Parsed::End if self.eof => return Ok(false),
                Parsed::NeedMore if self.end - self.at >= self.max_record => {
                    // `parse` left `at` and `line` at the record's first byte.
                    let line = self.line;
                    if self.need_quoted {
                        self.oversized = Some(Oversized { line, bytes: (self.end - self.at) as u64, quoted: true });
                        return Err(csv::Error::from(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            OversizedRecord,
                        )));
                    }
                    rec.clear();
                    let mut p = Position::new();
                    p.set_line(line).set_byte(self.base + self.at as u64);
                    rec.set_position(Some(p));
                    let bytes = self.skip_line()?;
                    self.raw = (self.at, self.at);
                    self.oversized = Some(Oversized { line, bytes, quoted: false });
                    return Ok(true);
                }
                Parsed::End | Parsed::NeedMore => self.fill()?,
            }
        }
    }

    /// Skip from `at` past the next line break (or to the end of the input), holding no more
    /// than a chunk at a time; returns the bytes skipped (without the terminator).
    fn skip_line(&mut self) -> csv::Result<u64> {
        let mut skipped = 0u64;
        loop {
            let b = &self.buf[self.at..self.end];
            if let Some(k) = memchr::memchr2(b'\n', b'\r', b) {
                skipped += k as u64;
                let i = self.at + k;
                self.after_cr = self.buf[i] == b'\r';
                self.line += u64::from(self.buf[i] == b'\n');
                self.at = i + 1;
                return Ok(skipped);
            }
            skipped += b.len() as u64;
            self.at = self.end;
            if self.eof {
                return Ok(skipped);
            }
            // Drop what was skipped, then read one chunk (the buffer does not grow).
            self.base += self.at as u64;
            self.at = 0;
            self.end = 0;
            let cap = self.buf.len().min(self.chunk);
            self.read_up_to(cap)?;
        }
    }

    /// Read into `buf[end..cap]` until it is full or the input ends (`eof`).
    fn read_up_to(&mut self, cap: usize) -> csv::Result<()> {
        while self.end < cap {
            match self.input.read(&mut self.buf[self.end..cap]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(csv::Error::from(e)),
            }
        }
        Ok(())
    }

    /// Keep the unparsed bytes and read more after them: at least a chunk, and as much again
    /// as is held when one record fills the buffer, so a huge record is re-scanned only a
    /// logarithmic number of times.
    fn fill(&mut self) -> csv::Result<()> {
        if self.at > 0 {
            self.buf.copy_within(self.at..self.end, 0);
            self.base += self.at as u64;
            self.end -= self.at;
            self.at = 0;
        }
        let want = self.end + self.chunk.max(self.end);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        self.read_up_to(self.buf.len())
    }

    /// Parse one record from `buf[at..end]`. Line and terminator bookkeeping is committed only
    /// when a record (or the end) is found, so a `NeedMore` can simply be retried.
    fn parse(&mut self, rec: &mut ByteRecord) -> Parsed {
        self.need_quoted = false;
        let b = &self.buf[..self.end];
        let mut i = self.at;
        let mut line = self.line;
        // The last record ended on `\r`: with a `\n` after it, that was one `\r\n` break;
        // alone, the `\r` was the break. Either way, one line.
        if self.after_cr {
            if i == b.len() && !self.eof {
                return Parsed::NeedMore;
            }
            if i < b.len() && b[i] == b'\n' {
                i += 1;
            }
            line += 1;
        }
        // Blank lines: `\n`, `\r\n` and a lone `\r` are one break each.
        while i < b.len() && (b[i] == b'\n' || b[i] == b'\r') {
            if b[i] == b'\r' {
                if i + 1 == b.len() && !self.eof {
                    // Is it `\r\n`? Keep what is decided so far and look again.
                    self.at = i;
                    self.line = line;
                    self.after_cr = false;
                    return Parsed::NeedMore;
                }
                if i + 1 < b.len() && b[i + 1] == b'\n' {
                    i += 1;
                }
            }
            line += 1;
            i += 1;
        }
        // Blank lines are consumed for good (a file of them must not fill the buffer).
        self.at = i;
        self.line = line;
        self.after_cr = false;
        if i == b.len() {
            return Parsed::End;
        }
        let mut p = Position::new();
        p.set_line(line).set_byte(self.base + i as u64);
        rec.set_position(Some(p));
        let start = i;
        loop {
            // At the start of a field.
            if b[i] == b'"' {
                // Quoted: up to the closing quote, `""` standing for one quote.
                let mut j = i + 1;
                self.scratch.clear();
                let mut piece = j;
                let after = loop {
                    match memchr::memchr(b'"', &b[j..]) {
                        None => {
                            if !self.eof {
                                self.need_quoted = true;
                                return Parsed::NeedMore;
                            }
                            // Unterminated at the end of input: the field is what is there.
                            self.unterminated = Some((line - count_lines(&b[i..piece]), count_lines(&b[i..])));
                            line += count_lines(&b[piece..]);
                            self.scratch.extend_from_slice(&b[piece..]);
                            break b.len();
                        }
                        Some(k) => {
                            let q = j + k;
                            if q + 1 >= b.len() && !self.eof {
                                self.need_quoted = true;
                                return Parsed::NeedMore;
                            }
                            line += count_lines(&b[piece..q]);
                            self.scratch.extend_from_slice(&b[piece..q]);
                            if q + 1 < b.len() && b[q + 1] == b'"' {
                                self.scratch.push(b'"');
                                j = q + 2;
                                piece = j;
                                continue;
                            }
                            break q + 1;
                        }
                    }
                };
                // After the closing quote the field goes on unquoted up to a delimiter or
                // terminator (`"a"b` is `ab`, as in `csv`).
                let stop = memchr::memchr3(b',', b'\n', b'\r', &b[after..]).map(|k| after + k);
                let stop = match stop {
                    Some(s) => s,
                    None if self.eof => b.len(),
                    None => return Parsed::NeedMore,
                };
                self.scratch.extend_from_slice(&b[after..stop]);
                rec.push_field(&self.scratch);
                i = stop;
            } else {
                let stop = memchr::memchr3(b',', b'\n', b'\r', &b[i..]).map(|k| i + k);
                let stop = match stop {
                    Some(s) => s,
                    None if self.eof => b.len(),
                    None => return Parsed::NeedMore,
                };
                rec.push_field(&b[i..stop]);
                i = stop;
            }
            if i == b.len() {
                // The last record of the input, without a terminator.
                self.line = line;
                self.after_cr = false;
                self.raw = (start, i);
                return Parsed::Record(i);
            }
            match b[i] {
                b',' => {
                    i += 1;
                    if i == b.len() {
                        if !self.eof {
                            return Parsed::NeedMore;
                        }
                        rec.push_field(b"");
                        self.line = line;
                        self.after_cr = false;
                        self.raw = (start, i);
                        return Parsed::Record(i);
                    }
                    if b[i] == b'\n' || b[i] == b'\r' {
                        // An empty last field.
                        rec.push_field(b"");
                        self.raw = (start, i);
                        return end_record(&mut self.after_cr, &mut self.line, b, i, line);
                    }
                }
                _ => {
                    self.raw = (start, i);
                    return end_record(&mut self.after_cr, &mut self.line, b, i, line);
                }
            }
        }
    }
}

/// The error inside the `io::Error` when a quoted field runs past the record limit (see
/// [`FastCsv::oversized`] for where).
#[derive(Debug)]
pub struct OversizedRecord;

impl std::fmt::Display for OversizedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a quoted field runs past the limit for one record")
    }
}

impl std::error::Error for OversizedRecord {}

/// The record ends at the terminator byte `b[i]`, which it consumes.
fn end_record(after_cr: &mut bool, line_now: &mut u64, b: &[u8], i: usize, line: u64) -> Parsed {
    *after_cr = b[i] == b'\r';
    *line_now = line + u64::from(b[i] == b'\n');
    Parsed::Record(i + 1)
}

/// Line breaks in `s`: each `\n`, and each `\r` not followed by `\n`.
fn count_lines(s: &[u8]) -> u64 {
    let lf = memchr::memchr_iter(b'\n', s).count() as u64;
    let lone_cr = memchr::memchr_iter(b'\r', s).filter(|&k| s.get(k + 1) != Some(&b'\n')).count() as u64;
    lf + lone_cr
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record's fields (`csv`'s line numbers are not compared: ours are physical lines).
    type Records = Vec<Vec<Vec<u8>>>;

    /// Every record's fields, read with `csv` and with `FastCsv` (in chunks of `chunk` bytes,
    /// so records straddle refills).
    fn both(input: &[u8], chunk: usize) -> (Records, Records) {
        let mut want = Vec::new();
        let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input);
        let mut rec = ByteRecord::new();
        while rdr.read_byte_record(&mut rec).expect("csv") {
            want.push(rec.iter().map(<[u8]>::to_vec).collect());
        }
        let (got, _) = fast_lines(input, chunk);
        (want, got)
    }

    /// Fields and (line, raw bytes) of every record read by `FastCsv`.
    fn fast_lines(input: &[u8], chunk: usize) -> (Records, Vec<(u64, Vec<u8>)>) {
        let mut rec = ByteRecord::new();
        let mut got = Vec::new();
        let mut at = Vec::new();
        let mut fast = FastCsv::with_chunk(input, chunk);
        while fast.read_byte_record(&mut rec).expect("fast") {
            got.push(rec.iter().map(<[u8]>::to_vec).collect());
            at.push((rec.position().map(|p| p.line()).unwrap_or(0), fast.raw().to_vec()));
        }
        (got, at)
    }

    fn check(input: &[u8]) {
        let (_, lines) = fast_lines(input, 1 << 16);
        for chunk in [1, 2, 3, 7, 64, 1 << 16] {
            let (want, got) = both(input, chunk);
            assert_eq!(got, want, "input {:?} chunk {chunk}", String::from_utf8_lossy(input));
            assert_eq!(fast_lines(input, chunk).1, lines, "positions, chunk {chunk}");
        }
    }

    /// The physical line of every record's first byte, whatever the line terminator.
    fn lines_of(input: &[u8]) -> Vec<u64> {
        fast_lines(input, 3).1.into_iter().map(|(l, _)| l).collect()
    }

    #[test]
    fn records_are_numbered_by_physical_line_for_lf_crlf_and_cr() {
        assert_eq!(lines_of(b"h\n1\n2\n"), [1, 2, 3]);
        assert_eq!(lines_of(b"h\r\n1\r\n2\r\n"), [1, 2, 3]);
        assert_eq!(lines_of(b"h\r1\r2\r"), [1, 2, 3]);
        assert_eq!(lines_of(b"h\n\n1\r\n\r\n2\r\r3"), [1, 3, 5, 7]);
        assert_eq!(lines_of(b"h\n\"a\r\nb\",1\n2\n"), [1, 2, 4]);
        assert_eq!(lines_of(b"h\r\"a\rb\",1\r2"), [1, 2, 4]);
    }

    #[test]
    fn a_record_keeps_its_original_bytes() {
        let (_, at) = fast_lines(b"h,i\r\n\"a,\"\"b\"\"\",  2 \r\nx,y", 4);
        assert_eq!(at[1], (2, b"\"a,\"\"b\"\"\",  2 ".to_vec()));
        assert_eq!(at[2], (3, b"x,y".to_vec()));
    }

    #[test]
    fn an_unterminated_quote_says_where_it_opened_and_what_it_swallowed() {
        let input = b"h,i\n1,2\n3,\"oops\n4,5\n6,7\n";
        let mut fast = FastCsv::with_chunk(&input[..], 5);
        let mut rec = ByteRecord::new();
        let mut seen = Vec::new();
        while fast.read_byte_record(&mut rec).expect("read") {
            seen.push((rec.position().map(|p| p.line()).unwrap_or(0), fast.unterminated()));
        }
        assert_eq!(seen, [(1, None), (2, None), (3, Some((3, 3)))]);
    }

    #[test]
    fn the_shapes_bills_have() {
        check(b"");
        check(b"a");
        check(b"a,b\n1,2\n");
        check(b"a,b\r\n1,2\r\n");
        check(b"a,b\r1,2\r");
        check(b"a,b\n1,2");
        check(b"a,\n,\n,,\n");
        check(b"\n\n\na,b\n\n\r\n1,2\n\n");
        check(b"\"Amazon Web Services, Inc.\",x\n");
        check(b"\"{\"\"app\"\":\"\"ledger\"\"}\",1.5\n");
        check(b"\"multi\nline\r\nfield\",2\n3,4\n");
        check(b"\"a\"b,c\n");
        check(b"a\"b,c\"\n");
        check(b"\"unterminated,field\n1,2");
        check(b"\"\"\n\"\",\"\"\n");
        check(b"\"x\"\"\"\n");
        check(b"a,b,\r\n");
        check(b",\r\n");
        check(b" \n \n");
        check("é,ü\n\"日本\",語\n".as_bytes());
    }

    /// Every record as (line, fields) or (line, "<oversized N>").
    fn limited(input: &[u8], max: usize) -> (Vec<(u64, String)>, usize) {
        let mut r = FastCsv::with_limit(input, max);
        let mut rec = ByteRecord::new();
        let mut out = Vec::new();
        while r.read_byte_record(&mut rec).expect("read") {
            let line = rec.position().map(|p| p.line()).unwrap_or(0);
            match r.oversized() {
                Some(o) => out.push((line, format!("<oversized {}>", o.bytes))),
                None => out.push((
                    line,
                    rec.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect::<Vec<_>>().join("|"),
                )),
            }
        }
        (out, r.buf.capacity())
    }

    #[test]
    fn a_record_over_the_limit_is_skipped_to_its_line_break_and_never_held() {
        let mut input = b"h1,h2\na,b\n".to_vec();
        input.extend(std::iter::repeat_n(b'z', 5 << 20));
        input.extend_from_slice(b"\r\nc,d\n");
        let (recs, cap) = limited(&input, 64 << 10);
        assert_eq!(
            recs,
            [(1, "h1|h2".to_string()), (2, "a|b".into()), (3, format!("<oversized {}>", 5 << 20)), (4, "c|d".into())]
        );
        assert!(cap <= 256 << 10, "the buffer stayed small: {cap}");
        // A single line with no break at all, up to the end of the input.
        let mut input = b"h\n".to_vec();
        input.extend(std::iter::repeat_n(b'0', 3 << 20));
        let (recs, cap) = limited(&input, 64 << 10);
        assert_eq!(recs, [(1, "h".to_string()), (2, format!("<oversized {}>", 3 << 20))]);
        assert!(cap <= 256 << 10, "{cap}");
    }

    #[test]
    fn a_quoted_field_over_the_limit_stops_reading_with_its_line() {
        let mut input = b"h1,h2\na,\"".to_vec();
        input.extend(std::iter::repeat_n(b'x', 1 << 20));
        let mut r = FastCsv::with_limit(&input[..], 64 << 10);
        let mut rec = ByteRecord::new();
        assert!(r.read_byte_record(&mut rec).expect("header"));
        assert!(r.read_byte_record(&mut rec).is_err());
        let o = r.oversized().expect("oversized");
        assert_eq!((o.line, o.quoted), (2, true));
    }

    #[test]
    fn records_under_the_limit_read_as_without_one() {
        let input = b"a,b\n\"q\nq\",x\r\n\n1,2";
        let (recs, _) = limited(input, 4096);
        assert_eq!(recs, [(1, "a|b".to_string()), (2, "q\nq|x".into()), (5, "1|2".into())]);
    }

    #[test]
    fn a_huge_record_is_read_whole() {
        let mut input = b"h1,h2\na,\"".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 << 20));
        input.extend_from_slice(b"\"\"y\"\nb,c\n");
        for chunk in [1000, 1 << 16] {
            let (want, got) = both(&input, chunk);
            assert_eq!(got, want, "chunk {chunk}");
            assert_eq!(got[1][1].len(), (3 << 20) + 2);
        }
    }

    #[test]
    fn random_input_reads_as_csv_reads_it() {
        let alphabet = [b'a', b'b', b',', b',', b'"', b'"', b'\n', b'\r', b' ', 0xc3];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let mut y = x;
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    y = y.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    alphabet[(y >> 59) as usize % alphabet.len()]
                })
                .collect();
            check(&input);
        }
    }
}
