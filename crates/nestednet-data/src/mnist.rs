use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{DataError, ImageSet, Normalization, Result};

/// Magic number of idx image files (unsigned bytes, 3 dimensions).
const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of idx label files (unsigned bytes, 1 dimension).
const LABELS_MAGIC: u32 = 0x0000_0801;

/// An idx array of unsigned bytes: its dimensions and data.
#[derive(Debug, Clone)]
pub struct IdxArray {
    /// Dimensions from the header.
    pub dims: Vec<usize>,
    /// `product(dims)` bytes.
    pub data: Vec<u8>,
}

/// Deflate expands data at most about 1032-fold: a gzip file cannot hold more than this many
/// times its own size, whatever its header claims.
const MAX_GZIP_RATIO: u64 = 1032;

/// A data file opened for reading, gunzipped on the fly if it starts with the gzip magic
/// bytes (whatever its name).
pub(crate) struct DataFile {
    path: PathBuf,
    reader: Box<dyn Read>,
    /// Size on disk.
    file_len: u64,
    compressed: bool,
    /// Bytes read so far (after decompression).
    consumed: u64,
}

impl DataFile {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let io = |source| DataError::Io { path: path.to_path_buf(), source };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut magic = [0u8; 2];
        let compressed = file_len >= 2 && {
            file.read_exact(&mut magic).map_err(io)?;
            magic == [0x1f, 0x8b]
        };
        use std::io::Seek;
        file.rewind().map_err(io)?;
        let file = std::io::BufReader::new(file);
        let reader: Box<dyn Read> =
            if compressed { Box::new(flate2::read::MultiGzDecoder::new(file)) } else { Box::new(file) };
        Ok(Self { path: path.to_path_buf(), reader, file_len, compressed, consumed: 0 })
    }

    fn read_error(&self, e: std::io::Error) -> DataError {
        match self.compressed {
            true => self.bad(format!("corrupt or truncated gzip stream: {e}")),
            false => DataError::Io { path: self.path.clone(), source: e },
        }
    }

    fn bad(&self, reason: String) -> DataError {
        DataError::BadSize { path: self.path.clone(), reason }
    }

    /// The most bytes this file can decompress to.
    pub(crate) fn max_content(&self) -> u64 {
        if self.compressed { self.file_len.saturating_mul(MAX_GZIP_RATIO) } else { self.file_len }
    }

    /// Reads up to `limit` bytes (fewer at the end of the data). Reading stops one byte past
    /// `limit`: a stream that goes on is an error, and never more than `limit + 1` bytes are
    /// decompressed or held.
    pub(crate) fn read_at_most(&mut self, limit: u64, what: &str) -> Result<Vec<u8>> {
        // Room for what the file can hold, at most 1 MiB up front (the fuzzer found a fixed
        // 16 MiB here for a 1 kB file); past that the vector doubles: at most twice the data.
        let mut out = Vec::with_capacity(limit.min(self.max_content()).min(1 << 20) as usize);
        (&mut self.reader)
            .take(limit.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| self.read_error(e))?;
        self.consumed += out.len() as u64;
        if out.len() as u64 > limit {
            return Err(self.bad(format!("more data than the {limit} bytes {what}")));
        }
        Ok(out)
    }

    /// Reads exactly `n` bytes.
    pub(crate) fn read_exact_bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n.min(self.max_content()).min(1 << 20) as usize);
        (&mut self.reader).take(n).read_to_end(&mut out).map_err(|e| self.read_error(e))?;
        self.consumed += out.len() as u64;
        if (out.len() as u64) < n {
            return Err(self.bad(format!("truncated {what}: the data end after {} bytes", self.consumed)));
        }
        Ok(out)
    }
}

/// Reads an idx file of unsigned bytes (`.gz` or raw) and checks its header against the data:
/// the magic number must be `expected_magic`, and the file must hold exactly the bytes the
/// dimensions announce. The size is computed with checked arithmetic and compared with what
/// the file can hold before anything is allocated; decompression stops one byte past the
/// announced size, so a small file inflating to gigabytes costs no more than its header says.
pub fn read_idx(path: &Path, expected_magic: u32, what: &'static str) -> Result<IdxArray> {
    let mut file = DataFile::open(path)?;
    let bad = |reason: String| DataError::BadSize { path: path.to_path_buf(), reason };
    let head = file.read_exact_bytes(4, "idx header")?;
    let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if magic != expected_magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            expected: expected_magic,
            found: magic,
            what,
        });
    }
    let ndim = (magic & 0xff) as u64;
    let header = 4 + 4 * ndim;
    let dim_bytes = file.read_exact_bytes(4 * ndim, "idx header")?;
    let dims: Vec<usize> =
        dim_bytes.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| bad(format!("the header's dimensions {dims:?} overflow a 64-bit size")))?;
    let room = file.max_content().saturating_sub(header);
    if expected > room {
        return Err(bad(match file.compressed {
            true => format!(
                "the header announces {dims:?} = {expected} bytes of data, more than a {}-byte gzip file can hold",
                file.file_len
            ),
            false => {
                format!("truncated: header announces {dims:?} = {expected} bytes of data, file has {room}")
            }
        }));
    }
    if !file.compressed && expected < room {
        return Err(bad(format!(
            "{} unexpected bytes after the {expected} bytes of data announced by {dims:?}",
            room - expected
        )));
    }
    let data = file.read_at_most(expected, &format!("announced by {dims:?}"))?;
    if (data.len() as u64) < expected {
        return Err(bad(format!(
            "truncated: header announces {dims:?} = {expected} bytes of data, file has {}",
            data.len()
        )));
    }
    Ok(IdxArray { dims, data })
}

/// MNIST in the idx format (any image size), 10 classes.
pub struct Mnist;

impl Mnist {
    /// Loads `train-*` and `t10k-*` images and labels from `dir`, `.gz` or raw.
    pub fn load(dir: &Path) -> Result<(ImageSet, ImageSet)> {
        let train =
            Self::load_split(&find(dir, "train-images-idx3-ubyte")?, &find(dir, "train-labels-idx1-ubyte")?)?;
        let test =
            Self::load_split(&find(dir, "t10k-images-idx3-ubyte")?, &find(dir, "t10k-labels-idx1-ubyte")?)?;
        Ok((train, test))
    }

    /// Loads one images file and its labels file, checking that they agree.
    pub fn load_split(images_path: &Path, labels_path: &Path) -> Result<ImageSet> {
        let images = read_idx(images_path, IMAGES_MAGIC, "idx images, u8, 3 dimensions")?;
        let labels = read_idx(labels_path, LABELS_MAGIC, "idx labels, u8, 1 dimension")?;
        let (count, height, width) = (images.dims[0], images.dims[1], images.dims[2]);
        if height == 0 || width == 0 {
            return Err(DataError::BadSize {
                path: images_path.to_path_buf(),
                reason: format!("images of {height}x{width} pixels"),
            });
        }
        if labels.dims[0] != count {
            return Err(DataError::CountMismatch {
                images_path: images_path.to_path_buf(),
                images: count,
                labels_path: labels_path.to_path_buf(),
                labels: labels.dims[0],
            });
        }
        let labels = labels.data.iter().map(|&l| l as usize).collect::<Vec<_>>();
        if let Some((index, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= 10) {
            return Err(DataError::LabelOutOfRange {
                path: labels_path.to_path_buf(),
                index,
                label,
                num_classes: 10,
            });
        }
        // MNIST's usual statistics for MNIST itself; other digit sets in the same format
        // (8x8 digits, say) are normalised with their own.
        let normalization = if (height, width) == (28, 28) {
            Normalization::mnist()
        } else {
            Normalization::measure(&images.data, 1, height * width)
        };
        Ok(ImageSet {
            pixels: images.data,
            labels,
            coarse_labels: None,
            channels: 1,
            height,
            width,
            num_classes: 10,
            num_coarse_classes: 0,
            normalization,
            class_names: (0..10).map(|d| d.to_string()).collect(),
        })
    }
}

/// `dir/stem.gz` or `dir/stem`, whichever exists (gzip first).
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let tried = vec![dir.join(format!("{stem}.gz")), dir.join(stem)];
    tried.iter().find(|p| p.is_file()).cloned().ok_or(DataError::Missing { tried })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(data);
        out
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn write_split(dir: &Path, prefix: &str, n: u32, h: u32, w: u32, labels: &[u8], compress: bool) {
        let pixels: Vec<u8> = (0..n * h * w).map(|i| (i % 251) as u8).collect();
        let imgs = idx(IMAGES_MAGIC, &[n, h, w], &pixels);
        let labs = idx(LABELS_MAGIC, &[labels.len() as u32], labels);
        let (imgs, labs, ext) = if compress { (gz(&imgs), gz(&labs), ".gz") } else { (imgs, labs, "") };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), imgs).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), labs).unwrap();
    }

    #[test]
    fn loads_raw_and_gz_of_any_size() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 3, 5, 7, &[1, 2, 9], true);
        write_split(dir.path(), "t10k", 2, 5, 7, &[0, 3], false);
        let (train, test) = Mnist::load(dir.path()).unwrap();
        assert_eq!((train.len(), train.height, train.width), (3, 5, 7));
        assert_eq!(train.labels, vec![1, 2, 9]);
        assert_eq!(test.labels, vec![0, 3]);
        assert_eq!(train.image(1)[0], 35);
        train.validate().unwrap();
    }

    /// A file whose header announces 10 images of 28x28 but whose stream inflates to 256 MiB:
    /// reading stops one byte past the 7,840 announced bytes.
    #[test]
    fn a_gzip_bomb_is_refused_after_what_its_header_announces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train-images-idx3-ubyte.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&idx(IMAGES_MAGIC, &[10, 28, 28], &[])).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..256 {
            enc.write_all(&zeros).unwrap();
        }
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        let mut file = DataFile::open(&path).unwrap();
        assert!(file.max_content() > 256 << 20, "the bomb fits the gzip ratio: only the header bounds it");
        let err = read_idx(&path, IMAGES_MAGIC, "images").unwrap_err().to_string();
        assert!(err.contains("more data than the 7840 bytes"), "{err}");
        // What was decompressed: the header, then one byte past the announced data.
        file.read_exact_bytes(16, "header").unwrap();
        assert!(file.read_at_most(7840, "announced").is_err());
        assert_eq!(file.consumed, 16 + 7841);
    }

    #[test]
    fn bad_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = Mnist::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");

        // Labels disagree with images.
        write_split(dir.path(), "train", 3, 4, 4, &[1, 2], false);
        write_split(dir.path(), "t10k", 1, 4, 4, &[1], false);
        let err = Mnist::load(dir.path()).unwrap_err();
        assert!(matches!(err, DataError::CountMismatch { images: 3, labels: 2, .. }), "{err}");

        // Truncated images.
        let p = dir.path().join("train-images-idx3-ubyte");
        let full = idx(IMAGES_MAGIC, &[3, 4, 4], &[0; 48]);
        std::fs::write(&p, &full[..40]).unwrap();
        let err = read_idx(&p, IMAGES_MAGIC, "images").unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte") && err.contains("truncated"), "{err}");

        // Trailing bytes.
        let mut long = full.clone();
        long.push(0);
        std::fs::write(&p, &long).unwrap();
        let err = read_idx(&p, IMAGES_MAGIC, "images").unwrap_err().to_string();
        assert!(err.contains("1 unexpected bytes"), "{err}");

        // Labels file given where images are expected.
        let l = dir.path().join("train-labels-idx1-ubyte");
        let err = read_idx(&l, IMAGES_MAGIC, "images").unwrap_err();
        assert!(matches!(err, DataError::BadMagic { found: LABELS_MAGIC, .. }), "{err}");

        // Corrupt gzip.
        let g = dir.path().join("corrupt.gz");
        let mut bytes = gz(&full);
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&g, bytes).unwrap();
        let err = read_idx(&g, IMAGES_MAGIC, "images").unwrap_err().to_string();
        assert!(err.contains("corrupt.gz") && err.contains("gzip"), "{err}");

        // A header whose sizes overflow when multiplied (they wrapped before: three dimensions
        // of 4294967295 read as 12884901887 bytes).
        std::fs::write(&p, idx(IMAGES_MAGIC, &[u32::MAX; 3], &[0; 16])).unwrap();
        let err = read_idx(&p, IMAGES_MAGIC, "images").unwrap_err().to_string();
        assert!(err.contains("overflow"), "{err}");
        // A header announcing more than a small gzip file can hold: refused before reading.
        std::fs::write(&g, gz(&idx(IMAGES_MAGIC, &[1_000_000, 1000, 1000], &[0; 64]))).unwrap();
        let err = read_idx(&g, IMAGES_MAGIC, "images").unwrap_err().to_string();
        assert!(err.contains("more than a") && err.contains("gzip file can hold"), "{err}");

        // Label out of range.
        std::fs::write(&p, &full).unwrap();
        std::fs::write(&l, idx(LABELS_MAGIC, &[3], &[1, 12, 0])).unwrap();
        let err = Mnist::load(dir.path()).unwrap_err();
        assert!(matches!(err, DataError::LabelOutOfRange { index: 1, label: 12, .. }), "{err}");
    }
}
