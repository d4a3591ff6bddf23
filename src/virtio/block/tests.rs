//! The block device against the mock driver: real image files under the temp directory, a
//! test arena as kernel memory, interrupts captured instead of raised in a kernel.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::execute::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP};
use super::request::types;
use super::*;
use crate::virtio::features::VIRTIO_RING_F_EVENT_IDX;
use crate::virtio::mmio::reg;
use crate::virtio::mock::{config, rd, wr, Buf, IrqCounter, MockDriver};
use crate::virtio::queue::{Descriptor, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use crate::virtio::status;

const MIB: u64 = 1 << 20;

/// An image file removed on drop.
struct TempImage(PathBuf);

impl TempImage {
    fn new(size: u64) -> TempImage {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "lklfuse-blk-{}-{}.img",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let f = File::create(&path).expect("create image");
        f.set_len(size).expect("size image");
        TempImage(path)
    }

    fn read_at(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        File::open(&self.0)
            .expect("open image")
            .read_exact_at(&mut buf, offset)
            .expect("read image");
        buf
    }

    fn write_at(&self, offset: u64, data: &[u8]) {
        OpenOptions::new()
            .write(true)
            .open(&self.0)
            .expect("open image")
            .write_all_at(data, offset)
            .expect("write image");
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Setup {
    image: TempImage,
    dev: Arc<BlockDevice>,
    irqs: Arc<IrqCounter>,
    mem: KernelMemory,
}

fn setup(size: u64, read_only: bool) -> Setup {
    let image = TempImage::new(size);
    let dev = BlockDevice::open(&image.0, read_only).expect("open device");
    let mem = KernelMemory::test_arena(32 * MIB as usize);
    assert!(dev.transport().set_memory(mem));
    let irqs = Arc::new(IrqCounter::default());
    assert!(dev.set_interrupt_sink(irqs.clone()));
    Setup {
        image,
        dev,
        irqs,
        mem,
    }
}

impl Setup {
    fn driver(&self) -> MockDriver<'_> {
        MockDriver::new(&*self.dev, self.mem, |offered| offered).expect("driver init")
    }
}

fn header(kind: u32, sector: u64) -> Vec<u8> {
    let mut h = kind.to_le_bytes().to_vec();
    h.extend_from_slice(&[0; 4]);
    h.extend_from_slice(&sector.to_le_bytes());
    h
}

fn ro(addr: u64, len: usize) -> Buf {
    Buf {
        addr,
        len: len as u32,
        write: false,
    }
}

fn wo(addr: u64, len: usize) -> Buf {
    Buf {
        addr,
        len: len as u32,
        write: true,
    }
}

/// Request helpers on top of the mock driver.
impl MockDriver<'_> {
    fn status_buf(&mut self) -> u64 {
        self.alloc(1, 0xee)
    }

    fn status_of(&self, addr: u64) -> u8 {
        let mut s = [0u8];
        self.mem.read(addr, &mut s).expect("status");
        s[0]
    }

    /// One request with a header, `data` buffers, and a status; returns (status, used len).
    fn request(&mut self, kind: u32, sector: u64, data: &[Buf]) -> (u8, u32) {
        let h = self.alloc_bytes(&header(kind, sector));
        let st = self.status_buf();
        let mut bufs = vec![ro(h, 16)];
        bufs.extend_from_slice(data);
        bufs.push(wo(st, 1));
        let head = self.add_chain(&bufs);
        self.kick();
        let used = self.wait_used(1);
        assert_eq!(used[0].0, head);
        (self.status_of(st), used[0].1)
    }

    /// Reads `len` bytes at `sector` in `segs` segments.
    fn read(&mut self, sector: u64, len: usize, segs: usize) -> (u8, Vec<u8>) {
        let seg = len / segs;
        let bufs: Vec<Buf> = (0..segs).map(|_| wo(self.alloc(seg, 0xcc), seg)).collect();
        let (st, used_len) = self.request(types::IN, sector, &bufs);
        let mut out = Vec::new();
        for b in &bufs {
            let mut part = vec![0u8; seg];
            self.mem.read(b.addr, &mut part).expect("data");
            out.extend_from_slice(&part);
        }
        if st == VIRTIO_BLK_S_OK {
            assert_eq!(used_len as usize, len + 1);
        }
        (st, out)
    }

    fn write(&mut self, sector: u64, data: &[u8], segs: usize) -> u8 {
        let seg = data.len() / segs;
        let bufs: Vec<Buf> = data
            .chunks(seg)
            .map(|c| ro(self.alloc_bytes(c), c.len()))
            .collect();
        let (st, used_len) = self.request(types::OUT, sector, &bufs);
        assert_eq!(used_len, 1);
        st
    }

    fn ranges(&mut self, kind: u32, ranges: &[(u64, u32, u32)]) -> u8 {
        let mut raw = Vec::new();
        for &(s, n, f) in ranges {
            raw.extend_from_slice(&s.to_le_bytes());
            raw.extend_from_slice(&n.to_le_bytes());
            raw.extend_from_slice(&f.to_le_bytes());
        }
        let b = self.alloc_bytes(&raw);
        self.request(kind, 0, &[ro(b, raw.len())]).0
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn features_and_config_space() {
    let s = setup(64 * MIB + 100, false);
    let dev: &dyn MmioDevice = &*s.dev;
    assert_eq!(rd(dev, reg::DEVICE_ID), 2);
    let d = s.driver();
    let f = d.features;
    for b in [
        VIRTIO_F_VERSION_1,
        VIRTIO_RING_F_INDIRECT_DESC,
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_DISCARD,
        VIRTIO_BLK_F_WRITE_ZEROES,
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_SIZE_MAX,
        VIRTIO_BLK_F_BLK_SIZE,
    ] {
        assert_ne!(f & bit(b), 0, "feature {b} offered");
    }
    assert_eq!(f & bit(VIRTIO_BLK_F_RO), 0);
    assert_eq!(f & bit(VIRTIO_RING_F_EVENT_IDX), 0);
    assert_eq!(d.size, QUEUE_SIZE);
    // The odd 100 bytes are cut off.
    assert_eq!(s.dev.capacity_bytes(), 64 * MIB);
    assert_eq!(config(dev, 0, 8), 64 * MIB / 512);
    // A 64-bit field read as two 32-bit halves, as Linux does.
    assert_eq!(config(dev, 0, 4) | config(dev, 4, 4) << 32, 64 * MIB / 512);
    assert_eq!(config(dev, 8, 4), u64::from(SIZE_MAX));
    assert_eq!(config(dev, 12, 4), u64::from(SEG_MAX));
    assert_eq!(config(dev, 20, 4), 512);
    assert_eq!(config(dev, 36, 4), u64::from(MAX_DISCARD_SECTORS));
    assert_eq!(config(dev, 40, 4), u64::from(MAX_DISCARD_SEG));
    assert_eq!(config(dev, 44, 4), u64::from(DISCARD_SECTOR_ALIGNMENT));
    assert_eq!(config(dev, 48, 4), u64::from(MAX_DISCARD_SECTORS));
    assert_eq!(config(dev, 56, 1), 1);
    assert_eq!(config(dev, 0x80, 4), 0, "beyond the struct reads as zero");

    // A driver that drops VERSION_1 is refused at FEATURES_OK.
    let refused = MockDriver::new(dev, s.mem, |o| o & !bit(VIRTIO_F_VERSION_1));
    assert!(refused.is_err_and(|st| st & status::FEATURES_OK == 0));
}

#[test]
fn read_write_round_trip() {
    let s = setup(16 * MIB, false);
    let mut d = s.driver();
    let data = pattern(64 * 1024, 7);
    assert_eq!(d.write(100, &data, 16), VIRTIO_BLK_S_OK);
    assert_eq!(s.image.read_at(100 * 512, data.len()), data);
    let (st, back) = d.read(100, data.len(), 4);
    assert_eq!(st, VIRTIO_BLK_S_OK);
    assert_eq!(back, data);
    // Host-side changes are visible.
    s.image.write_at(0, &[0xab; 512]);
    assert_eq!(d.read(0, 512, 1), (VIRTIO_BLK_S_OK, vec![0xab; 512]));
    // The last sector reads fine; one beyond does not.
    assert_eq!(d.read(16 * MIB / 512 - 1, 512, 1).0, VIRTIO_BLK_S_OK);
    assert!(s.irqs.count() > 0);
}

#[test]
fn indirect_chains_and_many_in_flight() {
    let s = setup(16 * MIB, false);
    let mut d = s.driver();
    // 100 writes of 4 KiB posted before one kick, half of them indirect.
    let mut expected = Vec::new();
    let mut statuses = Vec::new();
    for i in 0..100u64 {
        let data = pattern(4096, i as u8);
        let h = d.alloc_bytes(&header(types::OUT, i * 8));
        let b = d.alloc_bytes(&data);
        let st = d.status_buf();
        let bufs = [ro(h, 16), ro(b, 4096), wo(st, 1)];
        if i % 2 == 0 {
            d.add_indirect(&bufs);
        } else {
            d.add_chain(&bufs);
        }
        expected.push(data);
        statuses.push(st);
    }
    d.kick();
    let used = d.wait_used(100);
    assert_eq!(used.len(), 100);
    assert!(used.iter().all(|&(_, len)| len == 1));
    for (i, st) in statuses.iter().enumerate() {
        assert_eq!(d.status_of(*st), VIRTIO_BLK_S_OK, "request {i}");
        assert_eq!(s.image.read_at(i as u64 * 4096, 4096), expected[i]);
    }
}

/// Records the name of the thread that raised each interrupt.
#[derive(Default)]
struct IrqThreads(Mutex<Vec<String>>);

impl IrqThreads {
    fn last(&self) -> String {
        let raised = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        raised.last().cloned().unwrap_or_default()
    }
}

impl crate::virtio::InterruptSink for IrqThreads {
    fn raise(&self) {
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(name);
    }
}

#[test]
fn cached_small_reads_complete_on_the_notifying_thread() {
    let image = TempImage::new(16 * MIB);
    let data = pattern(INLINE_READ_MAX as usize + 4096, 3);
    image.write_at(0, &data); // now in the host's page cache
    let dev = BlockDevice::open(&image.0, false).expect("open device");
    let mem = KernelMemory::test_arena(8 * MIB as usize);
    assert!(dev.transport().set_memory(mem));
    let irqs = Arc::new(IrqThreads::default());
    assert!(dev.set_interrupt_sink(irqs.clone()));
    let mut d = MockDriver::new(&*dev, mem, |offered| offered).expect("driver init");
    let me = std::thread::current()
        .name()
        .expect("test threads are named")
        .to_owned();
    let on_worker = |name: String| name.starts_with("lklfuse-blk-");

    // A small cached read is copied and completed before QueueNotify returns.
    let (st, back) = d.read(8, 8192, 2);
    assert_eq!((st, &back[..]), (VIRTIO_BLK_S_OK, &data[4096..12288]));
    assert_eq!(irqs.last(), me);

    // Larger reads, writes, and reads that fail take a worker, which reports the error.
    let (st, back) = d.read(0, data.len(), 4);
    assert_eq!((st, back == data), (VIRTIO_BLK_S_OK, true));
    assert!(on_worker(irqs.last()), "{}", irqs.last());
    assert_eq!(d.write(0, &pattern(4096, 9), 1), VIRTIO_BLK_S_OK);
    assert!(on_worker(irqs.last()), "{}", irqs.last());
    assert_eq!(d.read(16 * MIB / 512 - 1, 1024, 1).0, VIRTIO_BLK_S_IOERR);
    assert!(on_worker(irqs.last()), "{}", irqs.last());

    // What the write changed is read back through the page cache at once.
    assert_eq!(d.read(0, 4096, 1), (VIRTIO_BLK_S_OK, pattern(4096, 9)));
    assert_eq!(irqs.last(), me);
}

#[test]
fn flush_get_id_and_unknown_types() {
    let s = setup(MIB, false);
    let mut d = s.driver();
    assert_eq!(d.write(0, &[1; 512], 1), VIRTIO_BLK_S_OK);
    assert_eq!(d.request(types::FLUSH, 0, &[]), (VIRTIO_BLK_S_OK, 1));
    s.dev.flush().expect("host-side flush");

    let id = d.alloc(20, 0xff);
    assert_eq!(
        d.request(types::GET_ID, 0, &[wo(id, 20)]),
        (VIRTIO_BLK_S_OK, 21)
    );
    let mut serial = [0u8; 20];
    d.mem.read(id, &mut serial).expect("serial");
    let name = s.image.0.file_name().expect("name").as_encoded_bytes();
    let n = name.len().min(20);
    assert_eq!(&serial[..n], &name[..n]);
    assert!(serial[n..].iter().all(|&b| b == 0));
    assert_eq!(s.dev.serial().as_bytes(), &name[..n]);

    assert_eq!(d.request(2, 0, &[]).0, VIRTIO_BLK_S_UNSUPP); // SCSI_CMD
    assert_eq!(d.request(0x7777, 0, &[]).0, VIRTIO_BLK_S_UNSUPP);
}

#[test]
fn flush_needs_the_feature() {
    let s = setup(MIB, false);
    let dev: &dyn MmioDevice = &*s.dev;
    let mut d = MockDriver::new(dev, s.mem, |o| o & !bit(VIRTIO_BLK_F_FLUSH)).expect("driver");
    assert_eq!(d.request(types::FLUSH, 0, &[]).0, VIRTIO_BLK_S_UNSUPP);
    // Not negotiated either: without the feature the device may not be asked.
    let mut d2 = MockDriver::new(dev, s.mem, |o| o & !bit(VIRTIO_BLK_F_DISCARD)).expect("driver");
    assert_eq!(d2.ranges(types::DISCARD, &[(0, 8, 0)]), VIRTIO_BLK_S_UNSUPP);
}

fn allocated_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").blocks() * 512
}

#[test]
fn discard_punches_holes() {
    let s = setup(8 * MIB, false);
    let mut d = s.driver();
    s.image.write_at(0, &vec![0x5a; 8 * MIB as usize]);
    File::open(&s.image.0)
        .expect("open")
        .sync_all()
        .expect("sync");
    let before = allocated_bytes(&s.image.0);
    assert!(before >= 8 * MIB, "image is fully allocated ({before})");
    // Two ranges: 4 MiB at 1 MiB, and 64 KiB at 6 MiB.
    let st = d.ranges(
        types::DISCARD,
        &[
            (MIB / 512, (4 * MIB / 512) as u32, 0),
            (6 * MIB / 512, 128, 0),
        ],
    );
    assert_eq!(st, VIRTIO_BLK_S_OK);
    let after = allocated_bytes(&s.image.0);
    if after == before {
        eprintln!("host file system does not punch holes; skipping the sparseness check");
    } else {
        assert!(before - after >= 4 * MIB, "{before} -> {after}");
        assert_eq!(
            s.image.read_at(MIB, 4 * MIB as usize),
            vec![0; 4 * MIB as usize]
        );
    }
    assert_eq!(std::fs::metadata(&s.image.0).expect("stat").len(), 8 * MIB);
    assert_eq!(s.image.read_at(0, 4096), vec![0x5a; 4096]);
    // UNMAP is not a discard flag; beyond the end is an error.
    assert_eq!(d.ranges(types::DISCARD, &[(0, 8, 1)]), VIRTIO_BLK_S_UNSUPP);
    assert_eq!(
        d.ranges(types::DISCARD, &[(8 * MIB / 512 - 8, 16, 0)]),
        VIRTIO_BLK_S_IOERR
    );
    assert_eq!(
        d.ranges(types::DISCARD, &[(0, MAX_DISCARD_SECTORS + 1, 0)]),
        VIRTIO_BLK_S_IOERR
    );
}

#[test]
fn write_zeroes_with_and_without_unmap() {
    let s = setup(4 * MIB, false);
    let mut d = s.driver();
    s.image.write_at(0, &vec![0x77; 4 * MIB as usize]);
    // Without UNMAP (kept allocated), with UNMAP (may be punched), an unaligned range.
    let st = d.ranges(
        types::WRITE_ZEROES,
        &[
            (0, 2048, 0),
            (2 * MIB / 512, 1024, 1),
            (3 * MIB / 512 + 3, 5, 0),
        ],
    );
    assert_eq!(st, VIRTIO_BLK_S_OK);
    let image = s.image.read_at(0, 4 * MIB as usize);
    let zero = |r: std::ops::Range<u64>| {
        image[r.start as usize..r.end as usize]
            .iter()
            .all(|&b| b == 0)
    };
    let full = |r: std::ops::Range<u64>| {
        image[r.start as usize..r.end as usize]
            .iter()
            .all(|&b| b == 0x77)
    };
    assert!(zero(0..MIB));
    assert!(full(MIB..2 * MIB));
    assert!(zero(2 * MIB..2 * MIB + 512 * 1024));
    assert!(full(2 * MIB + 512 * 1024..3 * MIB + 3 * 512));
    assert!(zero(3 * MIB + 3 * 512..3 * MIB + 8 * 512));
    assert!(full(3 * MIB + 8 * 512..4 * MIB));
    assert_eq!(
        d.ranges(types::WRITE_ZEROES, &[(0, 8, 2)]),
        VIRTIO_BLK_S_UNSUPP
    );

    // The fallback that writes zeroes, directly.
    s.image.write_at(0, &[0x77; 8192]);
    let disk = RawFile::new(
        File::options().write(true).open(&s.image.0).expect("open"),
        4 * MIB,
    );
    disk.write_zeroes_by_writing(100, 5000)
        .expect("write zeroes");
    let head = s.image.read_at(0, 8192);
    assert!(head[..100].iter().all(|&b| b == 0x77));
    assert!(head[100..5100].iter().all(|&b| b == 0));
    assert!(head[5100..].iter().all(|&b| b == 0x77));
}

#[test]
fn read_only_device_refuses_changes() {
    let s = setup(MIB, true);
    s.image.write_at(0, &[0x42; 1024]);
    let mut d = s.driver();
    assert_ne!(d.features & bit(VIRTIO_BLK_F_RO), 0);
    assert_eq!(d.features & bit(VIRTIO_BLK_F_DISCARD), 0);
    assert!(s.dev.read_only());
    assert_eq!(d.read(0, 1024, 2), (VIRTIO_BLK_S_OK, vec![0x42; 1024]));
    // Refused regardless of what the driver negotiated.
    assert_eq!(d.write(0, &[0; 512], 1), VIRTIO_BLK_S_IOERR);
    assert_eq!(d.ranges(types::DISCARD, &[(0, 8, 0)]), VIRTIO_BLK_S_UNSUPP);
    assert_eq!(
        d.ranges(types::WRITE_ZEROES, &[(0, 8, 0)]),
        VIRTIO_BLK_S_UNSUPP
    );
    assert_eq!(s.image.read_at(0, 1024), vec![0x42; 1024]);
    s.dev
        .flush()
        .expect("flush of a read-only device is a no-op");
}

#[test]
fn out_of_range_and_bad_lengths() {
    let s = setup(MIB, false);
    let mut d = s.driver();
    let sectors = MIB / 512;
    assert_eq!(d.read(sectors, 512, 1).0, VIRTIO_BLK_S_IOERR);
    assert_eq!(d.read(sectors - 1, 1024, 1).0, VIRTIO_BLK_S_IOERR);
    assert_eq!(d.write(sectors, &[0; 512], 1), VIRTIO_BLK_S_IOERR);
    // Byte offset overflows u64.
    assert_eq!(d.read(u64::MAX / 512 + 1, 512, 1).0, VIRTIO_BLK_S_IOERR);
    assert_eq!(d.read(u64::MAX, 512, 1).0, VIRTIO_BLK_S_IOERR);
    // Not whole sectors.
    let b = d.alloc(100, 0);
    assert_eq!(d.request(types::IN, 0, &[wo(b, 100)]).0, VIRTIO_BLK_S_IOERR);
    // The file stays untouched beyond its end.
    assert_eq!(std::fs::metadata(&s.image.0).expect("stat").len(), MIB);
}

#[test]
fn malformed_chains_never_crash() {
    let s = setup(MIB, false);
    let mut d = s.driver();
    // Data buffer outside memory: IOERR through the (valid) status.
    let h = d.alloc_bytes(&header(types::IN, 0));
    let st = d.status_buf();
    let head = d.add_chain(&[ro(h, 16), wo(0x1000, 512), wo(st, 1)]);
    d.kick();
    assert_eq!(d.wait_used(1), [(head, 1)]);
    assert_eq!(d.status_of(st), VIRTIO_BLK_S_IOERR);

    // No writable status at all: returned with length 0.
    let h = d.alloc_bytes(&header(types::OUT, 0));
    let b = d.alloc(512, 1);
    let head = d.add_chain(&[ro(h, 16), ro(b, 512)]);
    d.kick();
    assert_eq!(d.wait_used(1), [(head, 0)]);

    // Status byte outside memory: length 0.
    let h = d.alloc_bytes(&header(types::IN, 0));
    let head = d.add_chain(&[ro(h, 16), wo(u64::MAX - 4, 1)]);
    d.kick();
    assert_eq!(d.wait_used(1), [(head, 0)]);

    // Header too short, readable after writable: IOERR.
    let h = d.alloc_bytes(&header(types::IN, 0));
    let st = d.status_buf();
    let head = d.add_chain(&[ro(h, 8), wo(st, 1)]);
    d.kick();
    assert_eq!(d.wait_used(1), [(head, 1)]);
    assert_eq!(d.status_of(st), VIRTIO_BLK_S_IOERR);

    // A descriptor loop: 10 → 11 → 10.
    let h = d.alloc_bytes(&header(types::IN, 0));
    d.claim(&[10, 11]);
    let desc = |next| Descriptor {
        addr: h,
        len: 16,
        flags: VIRTQ_DESC_F_NEXT,
        next,
    };
    d.write_desc(10, desc(11));
    d.write_desc(11, desc(10));
    d.publish(10);
    // A next index out of the table.
    d.claim(&[12]);
    d.write_desc(
        12,
        Descriptor {
            addr: h,
            len: 16,
            flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
            next: 9999,
        },
    );
    d.publish(12);
    d.kick();
    let mut used = d.wait_used(2);
    used.sort();
    assert_eq!(used, [(10, 0), (12, 0)]);

    // The device still works.
    assert_eq!(d.write(0, &[9; 512], 1), VIRTIO_BLK_S_OK);
    assert_eq!(d.read(0, 512, 1), (VIRTIO_BLK_S_OK, vec![9; 512]));
}

#[test]
fn corrupt_available_ring_stops_the_queue_until_reset() {
    let s = setup(MIB, false);
    let mut d = s.driver();
    // A head index beyond the table cannot even be returned.
    d.publish(QUEUE_SIZE + 5);
    d.kick();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(d.pending_used(), 0);
    drop(d);
    // A reset and a fresh bring-up recover.
    let mut d = s.driver();
    assert_eq!(d.read(0, 512, 1).0, VIRTIO_BLK_S_OK);
}

#[test]
fn interrupt_suppression_is_honoured() {
    let s = setup(MIB, false);
    let mut d = s.driver();
    d.suppress_interrupts(true);
    let before = s.irqs.count();
    assert_eq!(d.read(0, 512, 1).0, VIRTIO_BLK_S_OK);
    assert_eq!(s.irqs.count(), before);
    d.suppress_interrupts(false);
    assert_eq!(d.read(0, 512, 1).0, VIRTIO_BLK_S_OK);
    // The interrupt follows the used-ring update.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.irqs.count() == before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(s.irqs.count(), before + 1);
}

#[test]
fn sector_math_beyond_2_tib() {
    const TIB: u64 = 1 << 40;
    let s = setup(0, false);
    drop(s.dev);
    // A sparse 3 TiB image (only the written blocks take space).
    File::options()
        .write(true)
        .open(&s.image.0)
        .expect("open")
        .set_len(3 * TIB)
        .expect("3 TiB sparse file");
    let dev = BlockDevice::open(&s.image.0, false).expect("open");
    assert!(dev.transport().set_memory(s.mem));
    assert_eq!(dev.capacity_bytes(), 3 * TIB);
    let dev_ref: &dyn MmioDevice = &*dev;
    let mut d = MockDriver::new(dev_ref, s.mem, |o| o).expect("driver");
    assert_eq!(config(dev_ref, 0, 8), 3 * TIB / 512);
    // Sector 2^32 + 8 is 2 TiB + 4 KiB: a 32-bit sector would wrap to 4 KiB.
    let sector = (1u64 << 32) + 8;
    let data = pattern(8192, 3);
    assert_eq!(d.write(sector, &data, 2), VIRTIO_BLK_S_OK);
    assert_eq!(s.image.read_at(sector * 512, 8192), data);
    assert_eq!(s.image.read_at(8 * 512, 8192), vec![0; 8192]);
    assert_eq!(d.read(sector, 8192, 1), (VIRTIO_BLK_S_OK, data));
    // The very last sector, and one past it.
    let last = 3 * TIB / 512 - 1;
    assert_eq!(d.write(last, &[0xee; 512], 1), VIRTIO_BLK_S_OK);
    assert_eq!(s.image.read_at(3 * TIB - 512, 512), vec![0xee; 512]);
    assert_eq!(d.write(last + 1, &[0xee; 512], 1), VIRTIO_BLK_S_IOERR);
    assert!(allocated_bytes(&s.image.0) < 64 * MIB);
}

#[test]
fn reset_drains_requests_in_flight() {
    let s = setup(16 * MIB, false);
    let dev: &dyn MmioDevice = &*s.dev;
    let mut d = s.driver();
    let mut statuses = Vec::new();
    for i in 0..64u64 {
        let h = d.alloc_bytes(&header(types::OUT, i * 256));
        let b = d.alloc(128 * 1024, i as u8);
        let st = d.status_buf();
        d.add_chain(&[ro(h, 16), ro(b, 128 * 1024), wo(st, 1)]);
        statuses.push(st);
    }
    d.kick();
    wr(dev, reg::STATUS, 0);
    // Reset returned: every request finished and went to the used ring first.
    assert_eq!(d.pending_used(), 64);
    for (i, st) in statuses.iter().enumerate() {
        assert_eq!(d.status_of(*st), VIRTIO_BLK_S_OK);
        assert_eq!(
            s.image.read_at(i as u64 * 256 * 512, 128 * 1024),
            vec![i as u8; 128 * 1024]
        );
    }
    assert_eq!(rd(dev, reg::STATUS), 0);
    assert_eq!(rd(dev, reg::INTERRUPT_STATUS), 0);
    wr(dev, reg::QUEUE_SEL, 0);
    assert_eq!(rd(dev, reg::QUEUE_READY), 0);
    // Notifications after reset reach nothing.
    d.kick();
    drop(d);
    // The device comes back for a new driver.
    let mut d = s.driver();
    d.reset_heap();
    assert_eq!(d.read(0, 512, 1), (VIRTIO_BLK_S_OK, vec![0; 512]));
}

/// One writer or many readers, across processes and within one (`flock` is per open file).
#[test]
fn image_lock_one_writer_or_many_readers() {
    let image = TempImage::new(MIB);
    let writer = BlockDevice::open(&image.0, false).expect("first writer");
    for read_only in [false, true] {
        match BlockDevice::open(&image.0, read_only) {
            Err(e @ BlockError::InUse { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("in use") && msg.contains(image.0.to_str().expect("utf-8")),
                    "{msg}"
                );
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened (read_only {read_only}) an image another device writes"),
        }
    }
    drop(writer);
    let r1 = BlockDevice::open(&image.0, true).expect("first reader");
    let r2 = BlockDevice::open(&image.0, true).expect("second reader");
    assert!(matches!(
        BlockDevice::open(&image.0, false),
        Err(BlockError::InUse {
            read_only: false,
            ..
        })
    ));
    drop((r1, r2));
    BlockDevice::open(&image.0, false).expect("writer after the readers left");
}

#[test]
fn open_errors() {
    let missing = std::env::temp_dir().join(format!("lklfuse-missing-{}", std::process::id()));
    assert!(matches!(
        BlockDevice::open(&missing, true),
        Err(BlockError::OpenImage { .. })
    ));
    assert!(matches!(
        BlockDevice::open(&std::env::temp_dir(), true),
        Err(BlockError::OpenImage { .. })
    ));
    // A file only readable: as root, permissions do not stop a read-write open, so use a
    // read-only file system object that root cannot write either, if there is one.
    let image = TempImage::new(MIB);
    let mut perms = std::fs::metadata(&image.0).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(&image.0, perms).expect("chmod");
    // `map(drop)`: a device that did open must let go of its image lock at once.
    match BlockDevice::open(&image.0, false).map(drop) {
        Err(BlockError::ImageReadOnly { .. }) => {}
        Ok(_) => {
            // Root: permission bits do not stop it; an immutable file does (EPERM).
            if let Some(_guard) = Immutable::set(&image.0) {
                assert!(matches!(
                    BlockDevice::open(&image.0, false),
                    Err(BlockError::ImageReadOnly { .. })
                ));
                assert!(BlockDevice::open(&image.0, true).is_ok());
            } else {
                eprintln!("cannot make a file read-only for root: fallback not exercised");
            }
        }
        Err(e) => panic!("unexpected error {e}"),
    }
    let dev = BlockDevice::open(&image.0, true).expect("read-only open works");
    assert!(dev.read_only());
}

/// `chattr +i` on a file until dropped.
struct Immutable<'a>(&'a Path);

impl<'a> Immutable<'a> {
    fn set(path: &'a Path) -> Option<Immutable<'a>> {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Immutable(path))
    }
}

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(self.0)
            .status();
    }
}

/// Bytes of `file` the host holds dirty, from cachestat(2); None where the host lacks it
/// (Linux before 6.5) or the file lives on tmpfs (never written back anywhere).
#[allow(unsafe_code)]
fn dirty_bytes(file: &File) -> Option<u64> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451; // the same number on every architecture
    const TMPFS_MAGIC: libc::c_long = 0x0102_1994;
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero statfs is a valid output buffer for fstatfs to fill.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fs` is writable and the descriptor is open (borrowed `file`).
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0
        || fs.f_type as libc::c_long == TMPFS_MAGIC
    {
        return None;
    }
    let range = Range { off: 0, len: 0 };
    let mut stat = Stat::default();
    // SAFETY: `range` and `stat` match the kernel's cachestat_range and cachestat layouts
    // and live across the call; flags must be 0.
    let ret = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0,
        )
    };
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    (ret == 0).then_some(stat.nr_dirty * page)
}

#[test]
fn large_writes_start_the_hosts_write_back() {
    let s = setup(64 * MIB, false);
    let file = File::open(&s.image.0).expect("open image");
    if dirty_bytes(&file).is_none() {
        eprintln!("NOTE: no cachestat(2), or the image is on tmpfs: write-behind not checked");
        return;
    }
    let mut d = s.driver();
    let data = pattern(MIB as usize, 3);
    for i in 0..20 {
        assert_eq!(d.write(i * MIB / 512, &data, 4), VIRTIO_BLK_S_OK);
    }
    // Left to itself the host keeps all 20 MiB dirty for 30 s; the kick at 16 MiB leaves
    // only what came after it.
    let dirty = dirty_bytes(&file).expect("cachestat");
    assert!(
        dirty <= 8 * MIB,
        "{dirty} bytes of the image still dirty after 20 MiB written"
    );
    assert_eq!(s.image.read_at(19 * MIB, MIB as usize), data);
}
