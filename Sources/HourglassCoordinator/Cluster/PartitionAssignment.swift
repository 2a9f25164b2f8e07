import HourglassCore

/// Which coordinator of a cluster should own each partition, and what one coordinator does about
/// it on a pass: a pure value, tested without a database.
///
/// Rendezvous (highest random weight) hashing: every coordinator scores each partition with a
/// stable hash of (coordinator id, partition) and the highest score wins. Every coordinator that
/// sees the same live set computes the same owners, with no coordination beyond that set; when
/// one joins or leaves, only the partitions it wins or held move (about P ÷ N of them), and the
/// shares are even in expectation.
struct PartitionAssignment: Sendable, Equatable {
  /// What to do on one pass.
  var acquire: [Partition]
  var release: [Partition]

  /// The plan for coordinator `me`: take or renew every partition it is preferred for, give up
  /// every partition it holds and is not. `members` are the live coordinators (`me` counts as
  /// live whether or not it is listed).
  init(me: String, members: [String], held: Set<Partition>, partitionCount: Int32) {
    var live = Set(members)
    live.insert(me)
    let ordered = live.sorted()
    var acquire: [Partition] = []
    var release: [Partition] = []
    for number in 0..<partitionCount {
      let partition = Partition(rawValue: number)
      if Self.preferredOwner(of: partition, among: ordered) == me {
        acquire.append(partition)
      } else if held.contains(partition) {
        release.append(partition)
      }
    }
    self.acquire = acquire
    self.release = release
  }

  /// The coordinator among `members` that should own `partition` (nil when there is none).
  /// Ties, which need equal 64-bit scores, go to the smaller id.
  static func preferredOwner(of partition: Partition, among members: some Sequence<String>) -> String? {
    var best: (score: UInt64, id: String)? = nil
    for member in members {
      let score = self.score(member, partition)
      if let current = best, current.score > score || (current.score == score && current.id < member) { continue }
      best = (score, member)
    }
    return best?.id
  }

  /// A stable score: the same on every machine and release (never `Hasher`, which is seeded
  /// per process).
  static func score(_ member: String, _ partition: Partition) -> UInt64 {
    StableHash.mix(StableHash.fnv1a(member.utf8) ^ StableHash.mix(UInt64(UInt32(bitPattern: partition.rawValue))))
  }
}
