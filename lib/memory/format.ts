/**
 * Byte counts for humans (binary units), shared by error messages and the CLI.
 */

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"] as const;

/** Formats a byte count with binary units: "512 B", "1.50 KiB", "12.3 MiB", "4.20 GiB". */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return String(bytes);
  let v = Math.abs(bytes);
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  const sign = bytes < 0 ? "-" : "";
  if (u === 0) return `${sign}${v} B`;
  // Three significant digits: enough to compare sizes, short enough for tables.
  const digits = v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${sign}${v.toFixed(digits)} ${UNITS[u]}`;
}
