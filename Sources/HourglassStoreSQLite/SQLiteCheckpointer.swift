import GRDB
import GRDBSQLite
import HourglassCore
import Logging
import Synchronization

/// Checkpoints the SQLite WAL on a connection of its own, so that no commit waits for one.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses its threshold, on the
/// committing connection: with one writer connection, every write queued behind that commit
/// (lease transactions, result group commits) waits while megabytes of WAL are copied into the
/// database file and synced — the 100–200 ms stalls the dispatch benchmark showed. Instead, a WAL
/// hook on the writer notes how many pages each commit leaves in the WAL and, each time
/// `threshold` more pages have been appended, wakes a task that runs a passive checkpoint on a
/// separate connection. A passive checkpoint takes no lock that writers or readers wait for, so
/// commits go on meanwhile; it copies what it can, and the next one continues. Durability does not
/// change: a commit is synced to the WAL before it is acknowledged either way.
final class SQLiteCheckpointer: Sendable {
  /// What the WAL hook updates on every commit; the context the hook is registered with.
  final class Trigger: Sendable {
    private struct State {
      /// Pages in the WAL after the previous commit (fewer now means the WAL was restarted).
      var pages = 0
      /// `pages` when the checkpointer was last woken.
      var pagesAtWake = 0
    }

    let threshold: Int
    private let state = Mutex(State())
    let wakeups: AsyncStream<Void>.Continuation
    let timeline: SQLiteTimeline?

    init(threshold: Int, wakeups: AsyncStream<Void>.Continuation, timeline: SQLiteTimeline?) {
      self.threshold = threshold
      self.wakeups = wakeups
      self.timeline = timeline
    }

    /// Called by SQLite on the writer connection after each commit, with the WAL's page count.
    func committed(pages: Int) {
      timeline?.noteWAL(frames: pages)
      let wake = state.withLock { state -> Bool in
        // A commit after a checkpoint that reached the end of the WAL starts it over.
        if pages < state.pages { state.pagesAtWake = 0 }
        state.pages = pages
        guard pages - state.pagesAtWake >= threshold else { return false }
        state.pagesAtWake = pages
        return true
      }
      if wake { wakeups.yield() }
    }
  }

  /// Checkpoints run (passive, each on the checkpointer's connection) and their outcome.
  struct Statistics: Sendable {
    /// Checkpoints finished without error (one per wake-up, however many passes it took).
    var completed = 0
    /// Finishing passes run on the writer connection (see ``SQLiteCheckpointer/finishPages``).
    var finished = 0
    /// WAL frames and frames copied into the database, as the last checkpoint reported them.
    var lastWALFrames = 0
    var lastCheckpointedFrames = 0
  }

  /// The statistics, and tests waiting for a number of checkpoints.
  private final class Progress: Sendable {
    private let state = Mutex<(Statistics, [(Int, CheckedContinuation<Void, Never>)])>((Statistics(), []))

    var statistics: Statistics { state.withLock { $0.0 } }

    func completed(walFrames: Int, checkpointedFrames: Int, finished: Bool) {
      let ready = state.withLock { box -> [CheckedContinuation<Void, Never>] in
        box.0.completed += 1
        if finished { box.0.finished += 1 }
        box.0.lastWALFrames = walFrames
        box.0.lastCheckpointedFrames = checkpointedFrames
        let count = box.0.completed
        let ready = box.1.filter { $0.0 <= count }.map(\.1)
        box.1.removeAll { $0.0 <= count }
        return ready
      }
      for waiter in ready { waiter.resume() }
    }

    func wait(until count: Int) async {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let done = state.withLock { box -> Bool in
          if box.0.completed >= count { return true }
          box.1.append((count, continuation))
          return false
        }
        if done { continuation.resume() }
      }
    }
  }

  private let trigger: Trigger
  private let connection: DatabaseQueue
  private let loop: Task<Void, Never>
  private let progress = Progress()

  /// A checkpoint pass on the checkpointer's connection copies the WAL as it was when the pass
  /// began; what commits append meanwhile stays behind. SQLite starts the WAL over from its
  /// beginning only after a checkpoint that reached its end, so under a steady stream of commits
  /// the WAL would grow for as long as the stream lasts (hundreds of MB a minute at 5,000
  /// runs/s; measured: 280 MB after 5 s of the dispatch benchmark), and every commit would
  /// append to a growing file. So passes are repeated while a pass finds more than this many
  /// pages appended since the previous one began; after a shorter one, the few pages appended
  /// during it are copied by a pass on the writer connection between two transactions
  /// (`finish`): no commit appends during that pass, so it reaches the end, and the next
  /// transaction starts the WAL over. The bulk of the copying stays off the writer.
  static let finishPages = 2048

  /// Passes on the checkpointer's connection per wake-up, at most, before giving up on reaching
  /// the end this time (a reader holding an old snapshot, or commits outpacing the copy).
  static let maxPasses = 6

  /// Opens the checkpointer's own connection to the database at `path` (already in WAL mode);
  /// checkpoints sync as `synchronous` asks. Nothing happens until ``install(on:)``. `finish`
  /// runs a passive checkpoint on the writer connection (between its transactions) and returns
  /// its frame counts; nil leaves the end of the WAL to the next passes.
  init(
    path: String, synchronous: SQLiteTaskStore.Synchronous, threshold: Int, logger: Logger,
    timeline: SQLiteTimeline? = nil, finish: (@Sendable () async throws -> (Int, Int))? = nil
  ) throws {
    var configuration = GRDB.Configuration()
    configuration.label = "hourglass.store.checkpointer"
    // The checkpointer waits for nothing: a passive checkpoint that finds the checkpoint lock
    // taken just returns, and the next wake-up tries again.
    configuration.busyMode = .immediateError
    configuration.prepareDatabase { db in
      // Checkpoints sync the WAL and the database file according to this connection's setting.
      try db.execute(sql: "PRAGMA synchronous = \(synchronous.rawValue)")
    }
    let connection = try DatabaseQueue(path: path, configuration: configuration)
    let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    let progress = self.progress
    self.connection = connection
    self.trigger = Trigger(threshold: max(1, threshold), wakeups: continuation, timeline: timeline)
    self.loop = Task {
      for await _ in stream {
        do {
          var (wal, copied) = try await Self.pass(.checkpoint, timeline) { try await connection.writeWithoutTransaction { db in try db.checkpoint(.passive) } }
          var passes = 1
          // `wal` is the WAL's length when a pass began: what it copies. What commits append
          // meanwhile is left for the next pass, which is shorter while copying outpaces them.
          var appended = wal
          while appended > Self.finishPages && passes < Self.maxPasses {
            let before = wal
            (wal, copied) = try await Self.pass(.checkpoint, timeline) { try await connection.writeWithoutTransaction { db in try db.checkpoint(.passive) } }
            passes += 1
            appended = wal - before
          }
          var finished = false
          if let finish, copied == wal, appended <= Self.finishPages {
            (wal, copied) = try await Self.pass(.finish, timeline, finish)
            finished = true
          }
          progress.completed(walFrames: wal, checkpointedFrames: copied, finished: finished)
        } catch {
          // Busy (another checkpoint) or an I/O error: the WAL keeps growing until the next
          // wake-up's checkpoint succeeds; commits are unaffected.
          logger.warning("WAL checkpoint failed", metadata: ["hourglass.error": "\(error)"])
        }
      }
    }
  }

  /// A checkpoint pass, noted in `timeline` when there is one.
  private static func pass(
    _ kind: SQLiteTimeline.Kind, _ timeline: SQLiteTimeline?, _ body: @Sendable () async throws -> (Int, Int)
  ) async throws -> (Int, Int) {
    guard let timeline else { return try await body() }
    let started = WallClock.nowMicros()
    let frames = try await body()
    let ended = WallClock.nowMicros()
    timeline.append(
      .init(kind: kind, queued: started, started: started, executed: ended, committed: ended, resumed: ended, count: frames.0, walFrames: frames.0))
    return frames
  }

  /// Registers the WAL hook on the writer connection. This replaces SQLite's automatic
  /// checkpoint on that connection (`PRAGMA wal_autocheckpoint` then reads 0).
  func install(on db: Database) {
    let context = Unmanaged.passRetained(trigger).toOpaque()
    sqlite3_wal_hook(
      db.sqliteConnection,
      { context, _, _, pages in
        if let context {
          Unmanaged<Trigger>.fromOpaque(context).takeUnretainedValue().committed(pages: Int(pages))
        }
        return SQLITE_OK
      }, context)
  }

  /// Removes the WAL hook from the writer connection (automatic checkpoints stay off).
  func uninstall(from db: Database) {
    sqlite3_wal_hook(db.sqliteConnection, nil, nil)
    Unmanaged.passUnretained(trigger).release()
  }

  /// What the checkpointer has done so far.
  var statistics: Statistics { progress.statistics }

  /// Returns once `count` checkpoints have completed (a signal for tests).
  func waitUntilCompleted(_ count: Int) async {
    await progress.wait(until: count)
  }

  /// Stops the checkpointer and closes its connection (after ``uninstall(from:)``).
  func close() async throws {
    trigger.wakeups.finish()
    await loop.value
    try connection.close()
  }

  /// Stops the checkpoint loop without waiting (the store is going away unclosed).
  func stop() {
    trigger.wakeups.finish()
  }
}
