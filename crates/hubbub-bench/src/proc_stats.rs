//! Memory and CPU time of a process, from /proc (Linux).

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User plus system CPU seconds of several processes together (`None` if one cannot be read).
pub fn cpu_seconds_of(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|&pid| cpu_seconds(Some(pid))).sum()
}

/// User plus system CPU seconds.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = match pid {
        Some(pid) => std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
        None => std::fs::read_to_string("/proc/self/stat").ok()?,
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
