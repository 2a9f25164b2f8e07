#if canImport(Glibc)
  import Glibc
#endif

/// The system's real-time clock, in the unit Hourglass keeps instants in: microseconds since the
/// Unix epoch, UTC. Due times, leases and traces are all on this clock.
public enum WallClock {
  /// The current instant.
  public static func nowMicros() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1000
  }
}
