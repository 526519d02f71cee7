"""How large an image set may be: refused before it is decoded or resized, not after memory runs out.

- `available_memory()`: the bytes this process can still take (MemAvailable, within a cgroup's limit).
- `check_fits(n, h, w, c, ...)`: refuse an image set whose pixels will not fit: `n*h*w*c` bytes of uint8
  pixels plus the float32 copy in [-1, 1] that training (`to_model_range`) and feature extraction make,
  5 bytes per value in all.
- `MAX_MEMBER_BYTES`, `MAX_ARCHIVE_BYTES`: caps on the uncompressed size of one zip member and of a whole
  zip, checked from the archive's directory before a byte is inflated (a 2 MB zip can hold a 2 GB member).
  PIL's own cap on the pixels of one image (`Image.MAX_IMAGE_PIXELS`) guards decompression bombs inside
  an image file (`diffmem.data.io.read_image_file`).
"""

from __future__ import annotations

from pathlib import Path

from diffmem.errors import DiffmemError

__all__ = ["BYTES_PER_VALUE", "MAX_MEMBER_BYTES", "MAX_ARCHIVE_BYTES", "DecodeBudget", "available_memory",
           "check_fits", "check_zip_sizes", "human_bytes"]

BYTES_PER_VALUE = 1 + 4  # the uint8 pixel and its float32 copy
MAX_MEMBER_BYTES = 256 * 2**20  # one image file in a zip (a 4096x4096 RGB PNG stores under 50 MiB)
MAX_ARCHIVE_BYTES = 32 * 2**30  # all members of a zip together


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """limit - usage of this process's memory cgroup (v2, then v1); None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 2**60:
                return None
            return max(0, int(limit) - int(Path(usage_file).read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


def available_memory() -> int | None:
    """Bytes of memory this process can still allocate without swapping, or None where unknown (then
    nothing is refused for its size)."""
    known = [v for v in (_meminfo_available(), _cgroup_room()) if v is not None]
    return min(known) if known else None


def human_bytes(n: float) -> str:
    """`1.5 GB`-style size (powers of 1000, as `free -h` and disk makers print them)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def check_fits(n: int, h: int, w: int, c: int, *, what: str, fix: str, budget: int | None = None,
               per_value: int = BYTES_PER_VALUE, held: str = "uint8 pixels and their float32 copy") -> None:
    """Refuse (one line: `what`, the estimate, the memory available, `fix`) `n` images of `h`x`w`x`c` whose
    uint8 pixels and float32 copy (`per_value` bytes a value in all, which `held` describes) would not fit in
    `budget` bytes (default: `available_memory()`)."""
    need = int(n) * int(h) * int(w) * int(c) * per_value
    room = available_memory() if budget is None else budget
    if room is not None and need > room:
        raise DiffmemError(f"{what}: {n} images of {h}x{w}x{c} need about {human_bytes(need)} ({held}), more "
                           f"than the {human_bytes(room)} of memory available; {fix}")


class DecodeBudget:
    """The running total of decoded pixels while a folder or zip is read, refused as soon as it (with the
    float32 copy to come) passes the memory that was available when reading began."""

    def __init__(self, source: str, total: int, budget: int | None = None) -> None:
        self.source, self.total, self.count, self.need = source, total, 0, 0
        self.room = available_memory() if budget is None else budget

    def add(self, values: int) -> None:
        """Count one more decoded image of `values` uint8 values; refuse when the set outgrows memory."""
        self.count += 1
        self.need += int(values) * BYTES_PER_VALUE
        if self.room is not None and self.need > self.room:
            raise DiffmemError(f"'{self.source}': its first {self.count} of {self.total} images already need about "
                               f"{human_bytes(self.need)} decoded (with their float32 copy), more than the "
                               f"{human_bytes(self.room)} of memory available; use fewer or smaller images")


def check_zip_sizes(path: Path, members: list) -> None:
    """Refuse a zip whose listed members (`zipfile.ZipInfo`s, to be read) inflate past the caps, from the
    sizes its directory declares (reading a member never yields more than its declared size)."""
    for info in members:
        if info.file_size > MAX_MEMBER_BYTES:
            raise DiffmemError(f"'{path}:{info.filename}' inflates to {human_bytes(info.file_size)}, more than the "
                               f"{human_bytes(MAX_MEMBER_BYTES)} one image file may take (a zip bomb, or not an "
                               "image); remove it from the archive")
    total = sum(info.file_size for info in members)
    if total > MAX_ARCHIVE_BYTES:
        raise DiffmemError(f"'{path}' inflates to {human_bytes(total)}, more than the {human_bytes(MAX_ARCHIVE_BYTES)} "
                           "a zip of images may take; split it, or give a folder of the images")
