/// A slice of the task id space: a stable hash of the task id modulo the partition count.
///
/// The hash is FNV-1a over the id's 16 bytes, written out here because `Hasher` is seeded per
/// process and would move tasks between partitions on every restart. The partition count is
/// fixed for the life of a store.
public struct Partition: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
  /// The partition number, in `0 ..< count`.
  public var rawValue: Int32

  /// Wraps a partition number.
  public init(rawValue: Int32) {
    self.rawValue = rawValue
  }

  /// The partition of `taskID` among `count` partitions (`count` ≥ 1).
  public init(taskID: TaskID, count: Int32) {
    precondition(count > 0, "partition count must be positive")
    self.rawValue = Int32(truncatingIfNeeded: Self.stableHash(taskID.bytes) % UInt64(count))
  }

  /// FNV-1a, 64 bits (``StableHash/fnv1a(_:)``): identical on every process, machine and release.
  public static func stableHash(_ bytes: some Sequence<UInt8>) -> UInt64 {
    StableHash.fnv1a(bytes)
  }

  public var description: String { "p\(rawValue)" }

  public static func < (lhs: Partition, rhs: Partition) -> Bool { lhs.rawValue < rhs.rawValue }

  public init(from decoder: any Decoder) throws {
    self.rawValue = try decoder.singleValueContainer().decode(Int32.self)
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(rawValue)
  }
}

/// A shard: the due entries of one partition in one hour bucket, loaded and dispatched by one
/// coordinator at a time.
public struct ShardID: Sendable, Hashable, Codable, CustomStringConvertible {
  /// The partition of the shard.
  public var partition: Partition
  /// The hour bucket of the shard.
  public var bucket: HourBucket

  /// Names the shard (`partition`, `bucket`).
  public init(partition: Partition, bucket: HourBucket) {
    self.partition = partition
    self.bucket = bucket
  }

  public var description: String { "\(partition)/\(bucket)" }
}
