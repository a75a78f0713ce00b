//! How a pull is told to people: sizes in decimal units and a one-line
//! summary, the same in `berth up` and in the kubelet's Pulled events.

use std::time::Duration;

/// Bytes in decimal units with one decimal: "512 B", "1.2 kB", "3.4 MB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// "3 layers, 1.2 MB in 0.4 s"; without a layer count, "1.2 MB in 0.4 s".
pub fn pull_summary(layers: Option<usize>, bytes: u64, took: Duration) -> String {
    let size = format!("{} in {:.1} s", human_bytes(bytes), took.as_secs_f64());
    match layers {
        Some(1) => format!("1 layer, {size}"),
        Some(n) => format!("{n} layers, {size}"),
        None => size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1000), "1.0 kB");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
        assert_eq!(human_bytes(999_999), "1.0 MB");
        assert_eq!(human_bytes(5_000_000_000), "5.0 GB");
    }

    #[test]
    fn summaries_count_layers_when_known() {
        let took = Duration::from_millis(420);
        assert_eq!(pull_summary(Some(3), 1_200_000, took), "3 layers, 1.2 MB in 0.4 s");
        assert_eq!(pull_summary(Some(1), 900, took), "1 layer, 900 B in 0.4 s");
        assert_eq!(pull_summary(None, 900, took), "900 B in 0.4 s");
    }
}
