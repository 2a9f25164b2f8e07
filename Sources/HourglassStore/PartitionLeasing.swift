import HourglassCore

/// A store that several coordinators share (PostgreSQL): each partition is leased to one
/// coordinator at a time, and the lease's epoch fences that partition's dispatch writes.
///
/// A store that does not conform (SQLite, one process) leaves every partition to the one
/// coordinator that opens it.
///
/// The epoch grows on every change of owner, and when a coordinator restarted under the same id
/// takes its partitions back: each process of a coordinator has an incarnation
/// (``newIncarnation()``, larger for every process started later), so a former process still
/// running (paused, not dead) is fenced like another owner. ``createLeases(_:now:fencedBy:)`` acts only where
/// the caller still holds the partition with the epoch it was granted, checked inside the same
/// transaction, so a coordinator that was paused past its partition lease cannot dispatch a run
/// its successor owns. ``recoverExpiredLeases(now:skewBound:limit:partitions:)`` takes the
/// partitions without their epochs: a coordinator paused past its partition lease may recover a
/// successor's expired run leases once, which only puts them back as pending (the successor's
/// sweep then dispatches them), never leases them.
/// Results are not fenced by partition: the run's own fence already names the one attempt whose
/// result counts, and refusing it after a hand-over would turn a finished run into a repeated one.
public protocol PartitionLeasing: TaskStore {
  /// Records that `member` is alive until `expiresAt` (with its address, whether it dispatches
  /// and its incarnation) and returns the coordinators alive at `now`, sorted by id. A live row
  /// of the same id with a later incarnation is left as it is (a former process is not recorded
  /// over a later one) and returned with that incarnation; an expired one is taken over.
  func heartbeatCoordinator(_ member: CoordinatorMember, now: Int64, expiresAt: Int64) async throws -> [CoordinatorMember]

  /// A number larger than any returned before, by any coordinator of the database (a
  /// sequence, not a clock, which may be set back): the incarnation of a coordinator process.
  func newIncarnation() async throws -> Int64

  /// Removes coordinator `id`'s process `incarnation` from the live set and gives up all the
  /// partition leases it holds (at a graceful shutdown, so the others take its partitions at
  /// their next pass, not after expiry).
  func leaveCluster(_ id: String, incarnation: Int64) async throws

  /// Every partition lease that exists (a partition never leased has none).
  func partitionLeases() async throws -> [PartitionLease]

  /// Takes or extends the leases of `partitions` for `owner`'s process `incarnation` until
  /// `expiresAt`: each one that is free, ran out before `now`, or is already `owner`'s with this
  /// incarnation or an earlier one (a restart takes its partitions back at once; a former process
  /// does not take them from a later one). A change of owner or incarnation increments the epoch.
  /// Returns the leases this process holds among `partitions` after the call.
  func acquirePartitions(
    _ partitions: [Partition], owner: String, incarnation: Int64, now: Int64, expiresAt: Int64
  ) async throws
    -> [PartitionLease]

  /// Gives up the leases of `partitions` that `owner`'s process `incarnation` holds (they become
  /// free at once; the epoch is kept and grows when another coordinator takes one).
  func releasePartitions(_ partitions: [Partition], owner: String, incarnation: Int64) async throws

  /// ``TaskStore/createLeases(_:now:)``, where each request is also refused (nil) unless its
  /// task's partition is still leased to `fence.owner` with the epoch in `fence`, and not
  /// expired at `now`; the partitions refused for that reason are named.
  func createLeases(
    _ requests: [LeaseRequest], now: Int64, fencedBy fence: PartitionFence
  ) async throws
    -> FencedLeases

  /// ``TaskStore/recoverExpiredLeases(now:skewBound:limit:)`` for the runs of tasks in
  /// `partitions` only.
  func recoverExpiredLeases(
    now: Int64, skewBound: Int64, limit: Int, partitions: [Partition]
  ) async throws
    -> [RunRecord]

  /// The database's clock now, in microseconds since the Unix epoch: the one clock every
  /// coordinator of the cluster reads, so each measures its own offset against it.
  func databaseClockMicros() async throws -> Int64

  /// Sends `notices` to every coordinator listening (after the caller's own writes committed).
  func publish(_ notices: [ClusterNotice]) async throws

  /// Delivers the notices other coordinators publish, until the task is cancelled. `onListening`
  /// is called each time a subscription starts (at first and after a lost connection): notices
  /// sent while none was active are lost, so the caller then rereads what it may have missed.
  /// Throws when the store cannot be reached; the caller retries.
  func listen(onListening: @Sendable () async -> Void, _ receive: @Sendable ([ClusterNotice]) async -> Void) async throws
}

/// A coordinator in the cluster's membership.
public struct CoordinatorMember: Sendable, Hashable {
  /// Its configured id.
  public var id: String
  /// Where executors reach it ("host:port"), if it advertises an address.
  public var address: String?
  /// Whether it takes partitions: it has executors to dispatch to. A member that does not
  /// dispatch heartbeats only to be announced to executors; partitions are spread over the
  /// members that do.
  public var dispatching: Bool
  /// Which process of the coordinator (``PartitionLeasing/newIncarnation()``); 0 for rows written
  /// before incarnations were recorded.
  public var incarnation: Int64

  /// Creates a member.
  public init(id: String, address: String? = nil, dispatching: Bool = true, incarnation: Int64 = 0) {
    self.id = id
    self.address = address
    self.dispatching = dispatching
    self.incarnation = incarnation
  }
}

/// What a fenced ``PartitionLeasing/createLeases(_:now:fencedBy:)`` did.
public struct FencedLeases: Sendable, Hashable {
  /// One element per request, in order: the lease, or nil where it was refused.
  public var leases: [Lease?]
  /// The partitions of the requests that were refused because the caller does not hold them
  /// (any more) with the fence's epoch, or their lease ran out.
  public var unheld: Set<Partition>

  /// Creates the outcome.
  public init(leases: [Lease?], unheld: Set<Partition>) {
    self.leases = leases
    self.unheld = unheld
  }
}

/// One partition's lease, as stored.
public struct PartitionLease: Sendable, Hashable {
  /// The partition.
  public var partition: Partition
  /// The coordinator holding (or last holding) it.
  public var owner: String
  /// Grows on every change of owner.
  public var epoch: Int64
  /// When the lease runs out unless renewed (0 once released).
  public var expiresMicros: Int64

  /// Creates a lease value.
  public init(partition: Partition, owner: String, epoch: Int64, expiresMicros: Int64) {
    self.partition = partition
    self.owner = owner
    self.epoch = epoch
    self.expiresMicros = expiresMicros
  }
}

/// What a fenced write checks: the coordinator and the epoch it holds each partition with.
public struct PartitionFence: Sendable, Hashable {
  /// The coordinator.
  public var owner: String
  /// The epoch of each partition the coordinator holds.
  public var epochs: [Partition: Int64]

  /// Creates a fence.
  public init(owner: String, epochs: [Partition: Int64]) {
    self.owner = owner
    self.epochs = epochs
  }
}

/// A message between the coordinators of a cluster.
public enum ClusterNotice: Sendable, Hashable {
  /// A run became due soon on a coordinator that does not own its partition (scheduled there, or
  /// rescheduled by a result recorded there): the owner queues it if it falls in its loaded window.
  case due(DueEntry)
  /// A deleted task's running run is to be cancelled: whoever holds its lease tells the executor.
  case cancel(RunID, reason: String)
  /// Partition ownership should change (a coordinator released partitions, or could not take
  /// the ones it is preferred for): every coordinator runs its ownership pass now rather than at
  /// its next interval, so a hand-over takes round trips, not seconds. `from` names the sender,
  /// which ignores its own notice.
  case rebalance(from: String)
  /// A coordinator's notice to itself, sent at each ownership pass: while its subscription
  /// works, the ping comes back within a round trip. One that stops coming back means the
  /// subscription's connection went silent (half-open: the database host crashed, or a NAT
  /// forgot it), which raises no error; the coordinator then subscribes again. Other
  /// coordinators ignore it.
  case ping(from: String)
}

extension ClusterNotice {
  /// The most bytes of one encoded payload: PostgreSQL's `NOTIFY` takes fewer than 8,000.
  public static let maxPayloadBytes = 7_000

  /// Encodes notices as text payloads of at most ``maxPayloadBytes`` each, one notice per line:
  /// `d <task id> <scheduled µs> <due µs> <priority>`, `c <run id> <reason>`, `r <coordinator id>`
  /// or `p <coordinator id>`.
  public static func encode(_ notices: [ClusterNotice]) -> [String] {
    var payloads: [String] = []
    var current = ""
    for notice in notices {
      let line: String
      switch notice {
      case .due(let entry):
        line = "d \(entry.taskID) \(entry.scheduledMicros) \(entry.dueMicros) \(entry.priority)"
      case .cancel(let runID, let reason):
        // One line, bounded: the reason is for logs only.
        let flat = String(reason.map { $0.isNewline ? " " : $0 }.prefix(200))
        line = "c \(runID) \(flat)"
      case .rebalance(let sender):
        line = "r \(Self.oneLine(sender))"
      case .ping(let sender):
        line = "p \(Self.oneLine(sender))"
      }
      if !current.isEmpty && current.utf8.count + 1 + line.utf8.count > maxPayloadBytes {
        payloads.append(current)
        current = ""
      }
      current += current.isEmpty ? line : "\n" + line
    }
    if !current.isEmpty { payloads.append(current) }
    return payloads
  }

  /// A coordinator id as one bounded line.
  private static func oneLine(_ id: String) -> String {
    String(id.filter { !$0.isNewline }.prefix(200))
  }

  /// Decodes a payload written by ``encode(_:)``; lines it does not understand (a newer
  /// coordinator's notices) are skipped.
  public static func decode(_ payload: String) -> [ClusterNotice] {
    payload.split(separator: "\n").compactMap { line -> ClusterNotice? in
      let fields = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
      switch fields.first {
      case "d":
        let parts = line.split(separator: " ")
        guard parts.count == 5, let task = TaskID(String(parts[1])), let scheduled = Int64(parts[2]), let due = Int64(parts[3]),
          let priority = Int32(parts[4])
        else { return nil }
        return .due(DueEntry(taskID: task, scheduledMicros: scheduled, dueMicros: due, priority: priority))
      case "c":
        guard fields.count >= 2, let runID = RunID(String(fields[1])) else { return nil }
        return .cancel(runID, reason: fields.count == 3 ? String(fields[2]) : "")
      case "r":
        guard fields.count >= 2 else { return nil }
        return .rebalance(from: fields.dropFirst().joined(separator: " "))
      case "p":
        guard fields.count >= 2 else { return nil }
        return .ping(from: fields.dropFirst().joined(separator: " "))
      default:
        return nil
      }
    }
  }
}
