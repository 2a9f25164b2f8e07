/// A stable 64-bit hash (FNV-1a followed by a SplitMix64 finaliser) for spreading tasks.
///
/// Unlike Swift's `Hasher`, which is seeded randomly per process, this gives the same value for
/// the same bytes on every machine and in every run, so a task keeps its jitter offset and its
/// retry delays across coordinator restarts and fail-overs.
public enum StableHash {
  /// Hashes `bytes` (for example a task id's UTF-8 or its 16 raw bytes).
  public static func hash<Bytes: Sequence>(_ bytes: Bytes) -> UInt64 where Bytes.Element == UInt8 {
    mix(fnv1a(bytes))
  }

  /// Plain FNV-1a, 64 bits, without the finaliser: identical on every process, machine and
  /// release. Partitions are assigned with it (and persisted), so its output must never change.
  public static func fnv1a<Bytes: Sequence>(_ bytes: Bytes) -> UInt64 where Bytes.Element == UInt8 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes {
      h ^= UInt64(b)
      h = h &* 0x0000_0100_0000_01b3
    }
    return h
  }

  /// Hashes the UTF-8 bytes of `text`.
  public static func hash(_ text: String) -> UInt64 {
    hash(text.utf8)
  }

  /// SplitMix64's finaliser: spreads every input bit over the whole word.
  @inline(__always)
  public static func mix(_ value: UInt64) -> UInt64 {
    var z = value &+ 0x9e37_79b9_7f4a_7c15
    z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
    z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
    return z ^ (z >> 31)
  }

  /// A value in `0..<1` derived from `seed` and `salt` (for example an attempt number).
  @inline(__always)
  static func unitInterval(_ seed: UInt64, salt: UInt64 = 0) -> Double {
    Double(mix(seed ^ mix(salt)) >> 11) * 0x1.0p-53
  }
}

/// Deterministic spreading of a recurring schedule's fire times.
///
/// With jitter `J`, every fire time of a task is delayed by the same offset in `[0, J)`, taken from
/// a stable hash of the task's id. Thousands of tasks on `0 * * * *` then do not all start on the
/// hour, yet each one fires at the same second every hour, on every coordinator.
public enum Jitter {
  /// The offset in microseconds in `[0, maximum)` for a task whose id hashes to `seed`; whole
  /// seconds when `maximum` is at least a second, so fire times stay on second boundaries.
  public static func offset(maximum: Int64, seed: UInt64) -> Int64 {
    guard maximum > 0 else { return 0 }
    let unit = StableHash.unitInterval(seed, salt: 0x6a69_7474_6572)  // "jitter"
    if maximum >= 1_000_000 {
      let seconds = maximum / 1_000_000
      return min(Int64(unit * Double(seconds)), seconds - 1) * 1_000_000
    }
    return min(Int64(unit * Double(maximum)), maximum - 1)
  }
}
