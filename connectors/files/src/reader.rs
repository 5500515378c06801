//! Blocking byte readers over object store ranges, with decompression, and the line chunker
//! that cuts a byte range into chunks of whole lines.
//!
//! Decoding runs on blocking threads (one per split being read), so the reader is a plain
//! [`std::io::Read`]: a local file is read directly with large reads; any other store's byte
//! stream is pulled with the runtime handle.

use crate::error::FilesError;
use crate::options::Compression;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore};
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use stratalake_core::Result;
use tokio::runtime::Handle;

/// A blocking reader over (a range of) one object.
pub(crate) enum RangeReader {
    File(io::Take<std::fs::File>),
    Stream {
        handle: Handle,
        stream: BoxStream<'static, object_store::Result<Bytes>>,
        cur: Bytes,
    },
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            RangeReader::File(f) => f.read(out),
            RangeReader::Stream {
                handle,
                stream,
                cur,
            } => {
                while cur.is_empty() {
                    match handle.block_on(stream.next()) {
                        Some(Ok(b)) => *cur = b,
                        Some(Err(e)) => return Err(io::Error::other(e)),
                        None => return Ok(0),
                    }
                }
                let n = out.len().min(cur.len());
                out[..n].copy_from_slice(&cur.split_to(n));
                Ok(n)
            }
        }
    }
}

/// Open `path` from byte `start` (to the end) on a blocking thread.
pub(crate) fn open_from(
    handle: &Handle,
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    start: u64,
    describe: &str,
) -> Result<RangeReader> {
    let opts = GetOptions {
        range: (start > 0).then_some(GetRange::Offset(start)),
        ..Default::default()
    };
    let got = handle
        .block_on(store.get_opts(path, opts))
        .map_err(|e| crate::error::store_err("get", describe, e))?;
    let range = got.range.clone();
    Ok(match got.payload {
        GetResultPayload::File(mut file, _) => {
            file.seek(SeekFrom::Start(range.start))
                .map_err(|source| FilesError::Read {
                    path: describe.to_string(),
                    source,
                })?;
            RangeReader::File(file.take(range.end - range.start))
        }
        GetResultPayload::Stream(stream) => RangeReader::Stream {
            handle: handle.clone(),
            stream,
            cur: Bytes::new(),
        },
    })
}

/// Counts bytes and fails past a limit (the decompressed-size cap).
struct Capped<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("decompressed size exceeds {} bytes", self.limit),
            ));
        }
        Ok(n)
    }
}

/// Wrap `reader` in the decompressor `compression` calls for, capped at `limit` output bytes.
pub(crate) fn decompress(
    reader: RangeReader,
    compression: Compression,
    limit: u64,
) -> io::Result<Box<dyn Read + Send>> {
    Ok(match compression {
        Compression::Gzip => Box::new(Capped {
            inner: flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(1 << 20, reader)),
            read: 0,
            limit,
        }),
        Compression::Zstd => Box::new(Capped {
            inner: zstd::stream::read::Decoder::new(reader)?,
            read: 0,
            limit,
        }),
        _ => Box::new(reader),
    })
}

/// A chunk of whole lines.
pub(crate) struct Chunk {
    pub bytes: Bytes,
    /// Lines before this chunk within the split (0-based index of its first line).
    pub first_line: u64,
}

/// A line longer than `max_record`, skipped without buffering it: where it was, how long it
/// was, and its first bytes.
#[derive(Debug)]
pub(crate) struct Oversized {
    /// Lines before it within the split (0-based index of the line).
    pub line: u64,
    /// Byte offset of its first byte (in the decompressed stream for compressed files).
    pub offset: u64,
    /// Its length in bytes, without the newline.
    pub len: u64,
    /// Its first [`OVERSIZED_PREFIX_BYTES`] bytes.
    pub prefix: Vec<u8>,
}

/// How much of an oversized line is kept for the quarantine.
pub(crate) const OVERSIZED_PREFIX_BYTES: usize = 1024;

/// What [`LineChunker::next_chunk`] yields.
pub(crate) enum Piece {
    /// Whole lines.
    Lines(Chunk),
    /// One line over the record cap, skipped.
    Oversized(Oversized),
}

/// Cuts a reader into chunks of whole lines, owning the lines that *start* before `end`.
pub(crate) struct LineChunker {
    reader: Box<dyn Read + Send>,
    buf: BytesMut,
    /// Absolute offset of `buf[0]` in the file (meaningful for uncompressed ranges).
    pos: u64,
    end: Option<u64>,
    eof: bool,
    done: bool,
    chunk_bytes: usize,
    max_record: usize,
    lines: u64,
    skip_partial_first: bool,
    /// A read error met after complete lines were buffered: those lines are delivered first,
    /// then the error.
    failed: Option<io::Error>,
}

impl LineChunker {
    /// A chunker over `reader`, whose first byte is at offset `pos`. When `skip_partial_first`,
    /// the bytes up to and including the first newline belong to the previous split.
    pub fn new(
        reader: Box<dyn Read + Send>,
        pos: u64,
        end: Option<u64>,
        skip_partial_first: bool,
        chunk_bytes: usize,
        max_record: usize,
    ) -> Self {
        Self {
            reader,
            buf: BytesMut::with_capacity(chunk_bytes + (64 << 10)),
            pos,
            end,
            eof: false,
            done: false,
            chunk_bytes,
            max_record,
            lines: 0,
            skip_partial_first,
            failed: None,
        }
    }

    fn fill(&mut self, want: usize) -> io::Result<()> {
        while !self.eof && self.buf.len() < want {
            let len = self.buf.len();
            let grow = (want - len).max(256 << 10);
            self.buf.resize(len + grow, 0);
            let n = loop {
                match self.reader.read(&mut self.buf[len..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            };
            match n {
                Ok(n) => {
                    self.buf.truncate(len + n);
                    if n == 0 {
                        self.eof = true;
                    }
                }
                Err(e) => {
                    self.buf.truncate(len);
                    if memchr::memchr(b'\n', &self.buf).is_some() {
                        self.failed = Some(e);
                        self.eof = true;
                        return Ok(());
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Where the buffer ends at end of input: all of it, or after its last complete line when
    /// reading failed (the partial line after it is not a record).
    fn eof_cut(&self) -> usize {
        if self.failed.is_some() {
            memchr::memrchr(b'\n', &self.buf).map_or(0, |i| i + 1)
        } else {
            self.buf.len()
        }
    }

    /// The buffer starts with a line longer than the cap: keep its first bytes and read past
    /// its end without holding it (memory stays bounded whatever the line's size).
    fn skip_oversized(&mut self) -> io::Result<Oversized> {
        let offset = self.pos;
        let prefix = self.buf[..self.buf.len().min(OVERSIZED_PREFIX_BYTES)].to_vec();
        let mut len = 0u64;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf) {
                len += i as u64;
                let _ = self.buf.split_to(i + 1);
                self.pos += (i + 1) as u64;
                break;
            }
            len += self.buf.len() as u64;
            self.pos += self.buf.len() as u64;
            self.buf.clear();
            if self.eof {
                self.done = true;
                break;
            }
            self.fill(self.chunk_bytes.max(1 << 16))?;
            if self.buf.is_empty() {
                self.done = true;
                break;
            }
        }
        let line = self.lines;
        self.lines += 1;
        if self.end.is_some_and(|end| self.pos >= end) {
            self.done = true;
        }
        Ok(Oversized {
            line,
            offset,
            len,
            prefix,
        })
    }

    /// The next chunk of whole lines or an oversized line, or `None` at the end of the range.
    ///
    /// # Errors
    /// I/O errors.
    pub fn next_chunk(&mut self) -> io::Result<Option<Piece>> {
        if self.skip_partial_first {
            self.skip_partial_first = false;
            loop {
                self.fill(1)?;
                if self.buf.is_empty() {
                    self.done = true;
                    break;
                }
                if let Some(i) = memchr::memchr(b'\n', &self.buf) {
                    let _ = self.buf.split_to(i + 1);
                    self.pos += (i + 1) as u64;
                    break;
                }
                self.pos += self.buf.len() as u64;
                self.buf.clear();
            }
        }
        if self.done {
            return match self.failed.take() {
                Some(e) => Err(e),
                None => Ok(None),
            };
        }
        let mut want = self.chunk_bytes;
        let cut = loop {
            self.fill(want)?;
            if let Some(end) = self.end {
                // Our last line is the one containing byte end-1: cut after the newline at or past it.
                if self.pos >= end {
                    self.done = true;
                    return Ok(None);
                }
                let rel = usize::try_from(end - 1 - self.pos).unwrap_or(usize::MAX);
                if rel < self.buf.len() {
                    if let Some(nl) = memchr::memchr(b'\n', &self.buf[rel..]) {
                        self.done = true;
                        break rel + nl + 1;
                    }
                    if self.eof {
                        self.done = true;
                        break self.eof_cut();
                    }
                    // The last line continues past the buffer: read more of it, unless it is
                    // over the cap (deliver the lines before it first, then skip it).
                    let line_start = memchr::memrchr(b'\n', &self.buf[..rel]).map_or(0, |i| i + 1);
                    if self.buf.len() - line_start > self.max_record {
                        if line_start > 0 {
                            break line_start;
                        }
                        return self.skip_oversized().map(|o| Some(Piece::Oversized(o)));
                    }
                    want = self.buf.len() + (1 << 20);
                    continue;
                }
            }
            if self.eof {
                self.done = true;
                break self.eof_cut();
            }
            match memchr::memrchr(b'\n', &self.buf) {
                Some(i) => break i + 1,
                None if self.buf.len() > self.max_record => {
                    return self.skip_oversized().map(|o| Some(Piece::Oversized(o)));
                }
                None => want = self.buf.len() * 2,
            }
        };
        if cut == 0 {
            return Ok(None);
        }
        // A line over the cap inside the buffer: deliver the lines before it, then skip it.
        let mut cut = cut;
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &self.buf[..cut]).chain(std::iter::once(cut)) {
            if end.saturating_sub(start) > self.max_record {
                if start == 0 {
                    self.done = false;
                    return self.skip_oversized().map(|o| Some(Piece::Oversized(o)));
                }
                cut = start;
                self.done = false;
                break;
            }
            start = end + 1;
        }
        let bytes = self.buf.split_to(cut).freeze();
        self.pos += cut as u64;
        let mut lines = memchr::memchr_iter(b'\n', &bytes).count() as u64;
        if !bytes.ends_with(b"\n") {
            lines += 1;
        }
        let chunk = Chunk {
            bytes,
            first_line: self.lines,
        };
        self.lines += lines;
        Ok(Some(Piece::Lines(chunk)))
    }
}

/// Count newlines in `[0, offset)` for each offset (sorted), reading the object once.
pub(crate) fn newlines_before(mut reader: impl Read, offsets: &[u64]) -> io::Result<Vec<u64>> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut buf = vec![0u8; 1 << 20];
    let (mut pos, mut count) = (0u64, 0u64);
    let mut next = 0;
    while next < offsets.len() {
        if offsets[next] <= pos {
            out.push(count);
            next += 1;
            continue;
        }
        let want = usize::try_from(offsets[next] - pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = reader.read(&mut buf[..want])?;
        if n == 0 {
            out.push(count);
            next += 1;
            continue;
        }
        count += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        pos += n as u64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks_of(data: &[u8], start: u64, end: Option<u64>, chunk: usize) -> Vec<String> {
        let skip = start > 0;
        let from = if skip { start - 1 } else { 0 };
        let reader: Box<dyn Read + Send> =
            Box::new(io::Cursor::new(data[from as usize..].to_vec()));
        let mut c = LineChunker::new(reader, from, end, skip, chunk, 1 << 20);
        let mut out = Vec::new();
        while let Some(piece) = c.next_chunk().unwrap() {
            match piece {
                Piece::Lines(ch) => out.push(String::from_utf8(ch.bytes.to_vec()).unwrap()),
                Piece::Oversized(o) => out.push(format!("<{} bytes at {}>", o.len, o.offset)),
            }
        }
        out
    }

    #[test]
    fn a_line_over_the_cap_is_skipped_with_its_place_and_prefix() {
        let long = "x".repeat(5000);
        let data = format!("a\n{long}\nbb\n{long}");
        for chunk in [1, 64, 4096] {
            let reader: Box<dyn Read + Send> = Box::new(io::Cursor::new(data.clone().into_bytes()));
            let mut c = LineChunker::new(reader, 0, None, false, chunk, 100);
            let mut seen = Vec::new();
            while let Some(piece) = c.next_chunk().unwrap() {
                match piece {
                    Piece::Lines(ch) => seen.push(format!(
                        "{}:{}",
                        ch.first_line,
                        String::from_utf8(ch.bytes.to_vec()).unwrap()
                    )),
                    Piece::Oversized(o) => {
                        assert_eq!(o.prefix.len(), 1024.min(o.prefix.len()));
                        assert!(o.prefix.iter().all(|b| *b == b'x'));
                        seen.push(format!("{}:<{} at {}>", o.line, o.len, o.offset));
                    }
                }
            }
            let joined = seen.join("|");
            assert!(joined.contains("1:<5000 at 2>"), "chunk {chunk}: {joined}");
            assert!(
                joined.contains("3:<5000 at 5006>"),
                "chunk {chunk}: {joined}"
            );
            assert!(joined.contains("bb"), "chunk {chunk}: {joined}");
        }
    }

    #[test]
    fn ranges_own_the_lines_that_start_in_them() {
        let data = b"aaa\nbbbb\ncc\n\ndddd\ne";
        for size in 1..data.len() as u64 + 2 {
            for chunk in [1, 3, 64] {
                let mut all = String::new();
                let mut start = 0u64;
                while start < data.len() as u64 {
                    let end = (start + size).min(data.len() as u64);
                    all.push_str(&chunks_of(data, start, Some(end), chunk).concat());
                    start = end;
                }
                assert_eq!(all.as_bytes(), data, "split size {size}, chunk {chunk}");
            }
        }
    }

    #[test]
    fn newline_counts_at_offsets() {
        let data = b"a\nb\nc\nd";
        assert_eq!(
            newlines_before(io::Cursor::new(data), &[0, 1, 2, 5, 100]).unwrap(),
            vec![0, 0, 1, 2, 3]
        );
    }
}
