import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Random numbers of the system generator's quality (the kernel's CSPRNG), fetched 4 KiB at a
/// time: `SystemRandomNumberGenerator` makes a `getrandom` system call for every 8 bytes, and
/// minting a task id (two draws) cost two of them on every Schedule, ~3% of a loaded event
/// loop. Draws come from one process-wide pool under a lock, refilled with `arc4random_buf`
/// (a single `getrandom` for the whole buffer on Linux).
///
/// The pool is ordinary process memory: a process that forks without exec must not draw from
/// it in both halves (Hourglass only forks to exec).
public struct PooledSystemRandomNumberGenerator: RandomNumberGenerator, Sendable {
  /// A generator drawing from the process-wide pool.
  public init() {}

  /// The next 64 random bits.
  public mutating func next() -> UInt64 {
    Self.pool.withLock { $0.next() }
  }

  private static let pool = Mutex(Pool())

  private struct Pool: ~Copyable {
    static let words = 512
    private var buffer = [UInt64](repeating: 0, count: Pool.words)
    private var index = Pool.words

    mutating func next() -> UInt64 {
      if index == Self.words {
        buffer.withUnsafeMutableBytes { arc4random_buf($0.baseAddress!, $0.count) }
        index = 0
      }
      defer { index += 1 }
      return buffer[index]
    }
  }
}
