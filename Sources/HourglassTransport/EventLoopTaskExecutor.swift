import NIOCore

/// A `TaskExecutor` that runs jobs on one NIO event loop.
///
/// A handler task started with this preference runs its nonisolated code on the loop of the
/// connection it serves: it reads the request the loop just decoded and writes its reply into
/// the channel directly, with no hop to the global executor and back.
///
/// Jobs enqueued on the loop's own thread (a calling task resumed by its connection, a handler
/// task started from a read), which is nearly all of them, are gathered and run in order by
/// one loop task per batch, instead of costing a closure allocated for each; jobs enqueued from
/// any other thread are passed to `execute` one by one.
///
/// Unchecked: `pending` and `drainScheduled` are only touched on `loop`'s thread (checked with
/// `inEventLoop`, or from a task the loop runs).
public final class EventLoopTaskExecutor: TaskExecutor, @unchecked Sendable {
  /// The loop the jobs run on.
  public let loop: any EventLoop
  private var pending: [UnownedJob] = []
  private var drainScheduled = false

  /// An executor running its jobs on `loop`.
  public init(loop: any EventLoop) {
    self.loop = loop
  }

  /// Runs `job` on the loop: gathered into the next batch when enqueued on the loop's own
  /// thread, passed to `execute` otherwise.
  public func enqueue(_ job: consuming ExecutorJob) {
    let job = UnownedJob(job)
    guard loop.inEventLoop else {
      loop.execute {
        job.runSynchronously(on: self.asUnownedTaskExecutor())
      }
      return
    }
    pending.append(job)
    if !drainScheduled {
      drainScheduled = true
      loop.execute { self.runPending() }
    }
  }

  /// Runs the jobs gathered so far; jobs they enqueue wait for the next batch, so that the
  /// loop still reads and runs its other tasks between batches.
  private func runPending() {
    drainScheduled = false
    var batch: [UnownedJob] = []
    swap(&batch, &pending)
    let executor = asUnownedTaskExecutor()
    for job in batch {
      job.runSynchronously(on: executor)
    }
    if pending.isEmpty {
      // Keep the storage for the next batch.
      batch.removeAll(keepingCapacity: true)
      pending = batch
    }
  }
}
