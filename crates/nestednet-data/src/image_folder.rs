//! A folder of images, one sub-folder per class (`DIR/train/<class>/*.png`, `DIR/test/<class>/*`).

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader, Limits};
use rayon::prelude::*;

use crate::{DataError, ImageSet, Normalization, Result};

/// Image file extensions the reader takes (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Largest width or height of an image file the reader decodes: a crafted header cannot make
/// it allocate more than a few hundred megabytes for one image.
const MAX_SIDE: u32 = 16_384;
/// Largest allocation the decoder may make for one image.
const MAX_DECODE_BYTES: u64 = 512 << 20;

/// A data set stored as image files, one folder per class:
///
/// ```text
/// DIR/train/<class>/<image>.png|jpg|jpeg
/// DIR/test/<class>/<image>.png|jpg|jpeg
/// ```
///
/// Classes are the training folder's sub-folders in sorted (byte) order, which gives their
/// labels; every test class must be one of them. Every image is resized (bilinear) to the
/// size asked for, or to the first training image's. The first training image also decides
/// the channels: 1 if it is grey, 3 otherwise; other images are converted to match. The
/// per-channel mean and standard deviation are measured on the training images (after
/// resizing) and normalise both sets. Hidden files and files with other extensions are
/// skipped; a class folder without an image, an unreadable or corrupt image, or a set without
/// images is an error naming the folder or file.
pub struct ImageFolder;

/// One image file and its label.
struct Entry {
    path: PathBuf,
    label: usize,
}

impl ImageFolder {
    /// Loads `dir/train` and `dir/test`, images resized to `size` (`[height, width]`) or to the
    /// first training image's size.
    pub fn load(dir: &Path, size: Option<[usize; 2]>) -> Result<(ImageSet, ImageSet)> {
        let (train_dir, test_dir, classes) = class_folders(dir, "an image folder")?;
        let train_entries = entries(&train_dir, &classes, &classes)?;
        let test_entries = entries(&test_dir, &sub_folders(&test_dir)?, &classes)?;
        let first = decode(&train_entries[0].path)?;
        let channels = if first.color().has_color() { 3 } else { 1 };
        let [height, width] = match size {
            Some([h, w]) if h == 0 || w == 0 || h > MAX_SIDE as usize || w > MAX_SIDE as usize => {
                return Err(DataError::Invalid(format!(
                    "image size {h}x{w}: each side must be between 1 and {MAX_SIDE}"
                )));
            }
            Some(size) => size,
            None => [first.height() as usize, first.width() as usize],
        };
        let mut train = read_set(&train_entries, channels, [height, width], &classes)?;
        let mut test = read_set(&test_entries, channels, [height, width], &classes)?;
        let normalization = Normalization::measure(&train.pixels, channels, height * width);
        train.normalization = normalization.clone();
        test.normalization = normalization;
        train.validate()?;
        test.validate()?;
        Ok((train, test))
    }
}

/// `dir/train` and `dir/test` of a data set stored as class folders (`what`: `an image
/// folder`), and the classes: the training folder's sub-folders, at least 2 (also used by the
/// sibling `text` reader).
pub(crate) fn class_folders(dir: &Path, what: &str) -> Result<(PathBuf, PathBuf, Vec<String>)> {
    let (train_dir, test_dir) = (dir.join("train"), dir.join("test"));
    for d in [&train_dir, &test_dir] {
        if !d.is_dir() {
            return Err(DataError::Missing { tried: vec![d.clone()] });
        }
    }
    let classes = sub_folders(&train_dir)?;
    if classes.len() < 2 {
        return Err(DataError::Invalid(format!(
            "{}: {what} needs at least 2 class folders, found {}",
            train_dir.display(),
            classes.len()
        )));
    }
    Ok((train_dir, test_dir, classes))
}

/// The label of the class folder `dir/name`: its position among the training `classes`.
pub(crate) fn class_label(dir: &Path, name: &str, classes: &[String]) -> Result<usize> {
    classes.iter().position(|c| c == name).ok_or_else(|| {
        DataError::Invalid(format!(
            "{}: class `{name}` has no training folder (the classes are {})",
            dir.join(name).display(),
            classes.join(", ")
        ))
    })
}

/// The visible sub-folders of `dir`, sorted.
pub(crate) fn sub_folders(dir: &Path) -> Result<Vec<String>> {
    let io = |source| DataError::Io { path: dir.to_path_buf(), source };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The image files of every class folder of `dir` (each of `present`, which must all be
/// among `classes`), labelled by their class's position in `classes`, in sorted order.
fn entries(dir: &Path, present: &[String], classes: &[String]) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for name in present {
        let label = class_label(dir, name, classes)?;
        let folder = dir.join(name);
        let io = |source| DataError::Io { path: folder.clone(), source };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&folder).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
            let is_image = extension.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()));
            if !file_name.starts_with('.') && is_image && path.is_file() {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(DataError::Invalid(format!(
                "{}: no image in this class folder (looking for {})",
                folder.display(),
                IMAGE_EXTENSIONS.join(", ")
            )));
        }
        files.sort();
        out.extend(files.into_iter().map(|path| Entry { path, label }));
    }
    if out.is_empty() {
        return Err(DataError::Invalid(format!("{}: no class folder holds an image", dir.display())));
    }
    Ok(out)
}

/// Decodes one image file, with bounded dimensions and allocation.
fn decode(path: &Path) -> Result<DynamicImage> {
    let bad = |reason: String| DataError::BadSize { path: path.to_path_buf(), reason };
    let mut reader = ImageReader::open(path)
        .map_err(|source| DataError::Io { path: path.to_path_buf(), source })?
        .with_guessed_format()
        .map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    reader.decode().map_err(|e| bad(format!("cannot decode the image: {e}")))
}

/// Decodes, converts and resizes every entry into an image set (normalisation still to set).
fn read_set(
    entries: &[Entry],
    channels: usize,
    [height, width]: [usize; 2],
    classes: &[String],
) -> Result<ImageSet> {
    let images: Vec<Vec<u8>> = entries
        .par_iter()
        .map(|entry| {
            let image = decode(&entry.path)?;
            let image = if (image.height() as usize, image.width() as usize) == (height, width) {
                image
            } else {
                image.resize_exact(width as u32, height as u32, FilterType::Triangle)
            };
            // Interleaved HWC bytes to planar CHW.
            let hwc =
                if channels == 1 { image.into_luma8().into_raw() } else { image.into_rgb8().into_raw() };
            let plane = height * width;
            let mut chw = vec![0u8; channels * plane];
            for (i, pixel) in hwc.chunks_exact(channels).enumerate() {
                for (c, &v) in pixel.iter().enumerate() {
                    chw[c * plane + i] = v;
                }
            }
            Ok(chw)
        })
        .collect::<Result<_>>()?;
    Ok(ImageSet {
        pixels: images.concat(),
        labels: entries.iter().map(|e| e.label).collect(),
        coarse_labels: None,
        channels,
        height,
        width,
        num_classes: classes.len(),
        num_coarse_classes: 0,
        normalization: Normalization { mean: vec![0.0; channels], std: vec![1.0; channels] },
        class_names: classes.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, side: u32, color: bool, value: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if color {
            image::RgbImage::from_pixel(side, side, image::Rgb([value, 0, 255 - value])).save(path).unwrap();
        } else {
            image::GrayImage::from_pixel(side, side, image::Luma([value])).save(path).unwrap();
        }
    }

    #[test]
    fn classes_come_from_sorted_folders_and_images_are_resized() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_png(&root.join("train/cat/a.png"), 6, true, 10);
        write_png(&root.join("train/cat/b.PNG"), 8, true, 20);
        write_png(&root.join("train/ant/x.png"), 8, false, 200);
        std::fs::write(root.join("train/ant/notes.txt"), "not an image").unwrap();
        write_png(&root.join("test/cat/c.png"), 8, true, 30);
        let (train, test) = ImageFolder::load(root, Some([4, 4])).unwrap();
        assert_eq!(train.class_names, ["ant", "cat"]);
        assert_eq!((train.len(), train.channels, train.height, train.width), (3, 1, 4, 4));
        // `ant` sorts first: label 0; the grey first image makes the set grey.
        assert_eq!(train.labels, [0, 1, 1]);
        assert_eq!((test.len(), test.labels.clone()), (1, vec![1]));
        assert_eq!(test.normalization, train.normalization);
        // Without a size, the first training image's (`ant/x.png`, 8x8) is used.
        let (train, _) = ImageFolder::load(root, None).unwrap();
        assert_eq!((train.height, train.width), (8, 8));
    }

    #[test]
    fn bad_folders_and_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let err = |r: Result<(ImageSet, ImageSet)>| r.expect_err("an error").to_string();
        assert!(err(ImageFolder::load(root, None)).contains("train"));
        write_png(&root.join("train/a/1.png"), 4, false, 1);
        write_png(&root.join("train/b/1.png"), 4, false, 2);
        write_png(&root.join("test/c/1.png"), 4, false, 3);
        let e = err(ImageFolder::load(root, None));
        assert!(e.contains("class `c` has no training folder"), "{e}");
        std::fs::remove_dir_all(root.join("test/c")).unwrap();
        std::fs::create_dir_all(root.join("test/b")).unwrap();
        let e = err(ImageFolder::load(root, None));
        assert!(e.contains("no image in this class folder"), "{e}");
        std::fs::write(root.join("test/b/broken.png"), b"\x89PNG not really").unwrap();
        let e = err(ImageFolder::load(root, None));
        assert!(e.contains("broken.png") && e.contains("cannot decode"), "{e}");
        std::fs::remove_file(root.join("test/b/broken.png")).unwrap();
        write_png(&root.join("test/b/1.png"), 4, false, 2);
        assert!(err(ImageFolder::load(root, Some([0, 4]))).contains("between 1 and"));
        ImageFolder::load(root, Some([2, 3])).unwrap();
    }
}
