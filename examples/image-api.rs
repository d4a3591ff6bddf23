//! The library API in a few lines: list a directory of an image and print a file from it.
//!
//! ```text
//! cargo run --release --example image-api -- disk.img [/dir [/file]]
//! ```

use std::io::Read;
use std::process::ExitCode;

use lklfuse::image::{Image, OpenOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(image_path) = args.first() else {
        eprintln!("usage: image-api IMAGE [DIR [FILE]]");
        return ExitCode::from(2);
    };
    let dir = args.get(1).map_or("/", String::as_str);
    match run(image_path, dir, args.get(2).map(String::as_str)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("image-api: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(image_path: &str, dir: &str, file: Option<&str>) -> Result<(), lklfuse::image::Error> {
    let image = Image::open(image_path, &OpenOptions::read_only())?;
    println!("{image_path}: {}", image.fstype());
    let mut entries: Vec<_> = image.read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    for entry in entries {
        let meta = image.symlink_metadata(entry.path())?;
        let mtime = meta.modified();
        let xattrs = image.xattrs(entry.path())?;
        print!(
            "{:06o} {:>5}:{:<5} {:>10} {}.{:09} {}",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.len(),
            mtime.sec,
            mtime.nsec,
            entry.path().display()
        );
        if meta.is_symlink() {
            print!(" -> {}", image.read_link(entry.path())?.display());
        }
        if !xattrs.is_empty() {
            print!("  xattrs: {xattrs:?}");
        }
        println!();
    }
    if let Some(file) = file {
        let mut text = String::new();
        image
            .open_file(file)?
            .read_to_string(&mut text)
            .map_err(|e| lklfuse::image::Error::Path {
                path: file.into(),
                image: image_path.into(),
                errno: e.into(),
            })?;
        print!("{text}");
    }
    image.close()
}
