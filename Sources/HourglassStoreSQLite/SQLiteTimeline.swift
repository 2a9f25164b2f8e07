import Synchronization

/// An opt-in record of the store's write transactions and checkpoint passes with their wall-clock
/// instants, to see where commit time goes beside a dispatch trace (the dispatch benchmark's
/// `--trace`). Off unless a timeline is given to the store; holds at most `capacity` events.
public final class SQLiteTimeline: Sendable {
  /// What an event was.
  public enum Kind: String, Sendable {
    case insert, lease, result, recover, write
    /// A passive checkpoint pass on the checkpointer's connection.
    case checkpoint
    /// The finishing checkpoint pass on the writer connection.
    case finish
  }

  /// One transaction or pass: queued for the connection, started on it, its statements done,
  /// committed (synced), and its caller resumed — wall-clock microseconds. `count` is the rows
  /// or runs it wrote, or for a checkpoint the WAL frames it found. `walFrames` is the WAL's
  /// length after the commit (with the store's checkpointer; the frames a commit appended are
  /// the difference from the previous commit's, unless the WAL started over).
  public struct Event: Sendable {
    public var kind: Kind
    public var queued: Int64
    public var started: Int64
    public var executed: Int64
    public var committed: Int64
    public var resumed: Int64
    public var count: Int
    public var walFrames: Int
  }

  private let events: Mutex<[Event]>
  private let capacity: Int
  /// The WAL's length after the writer's last commit, from the checkpointer's WAL hook.
  private let walLength = Atomic<Int>(0)

  /// A timeline holding at most `capacity` events (later ones are dropped).
  public init(capacity: Int = 1 << 20) {
    self.capacity = capacity
    var initial: [Event] = []
    initial.reserveCapacity(min(capacity, 1 << 16))
    events = Mutex(initial)
  }

  func append(_ event: Event) {
    events.withLock { if $0.count < capacity { $0.append(event) } }
  }

  func noteWAL(frames: Int) {
    walLength.store(frames, ordering: .relaxed)
  }

  /// The WAL's length after the last commit (read on the writer, right after its own commit).
  var walFrames: Int { walLength.load(ordering: .relaxed) }

  /// The events so far, in the order they ended.
  public var snapshot: [Event] { events.withLock { $0 } }
}
