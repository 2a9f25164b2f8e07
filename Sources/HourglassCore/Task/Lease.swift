/// The right of one executor to run one run until `expiresAtMicros`, proven by `fence`.
public struct Lease: Sendable, Hashable, Codable {
  /// The leased run.
  public var runID: RunID
  /// The executor holding the lease.
  public var owner: String
  /// The token that results and renewals must present.
  public var fence: Fence
  /// Which attempt of the run this is, from 1.
  public var attempt: Int32
  /// When the lease was granted (UTC µs).
  public var grantedAtMicros: Int64
  /// When the lease runs out unless renewed (UTC µs).
  public var expiresAtMicros: Int64

  /// Describes a lease.
  public init(
    runID: RunID, owner: String, fence: Fence, attempt: Int32, grantedAtMicros: Int64,
    expiresAtMicros: Int64
  ) {
    self.runID = runID
    self.owner = owner
    self.fence = fence
    self.attempt = attempt
    self.grantedAtMicros = grantedAtMicros
    self.expiresAtMicros = expiresAtMicros
  }

  /// The task the leased run belongs to.
  public var taskID: TaskID { runID.taskID }
}
