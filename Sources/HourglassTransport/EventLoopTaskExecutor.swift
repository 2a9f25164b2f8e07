import NIOCore

/// A `TaskExecutor` that runs jobs on one NIO event loop.
///
/// A handler task started with this preference runs its nonisolated code on the loop of the
/// connection it serves: it reads the request the loop just decoded and writes its reply into
/// the channel directly, with no hop to the global executor and back.
final class EventLoopTaskExecutor: TaskExecutor {
  let loop: any EventLoop

  init(loop: any EventLoop) {
    self.loop = loop
  }

  func enqueue(_ job: consuming ExecutorJob) {
    let job = UnownedJob(job)
    loop.execute {
      job.runSynchronously(on: self.asUnownedTaskExecutor())
    }
  }
}
