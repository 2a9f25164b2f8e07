import Foundation
import Synchronization
import Testing

@testable import HourglassExecutor

#if canImport(Glibc)
  import Glibc
#endif

@Suite("child process", .timeLimit(.minutes(3)))
struct ChildProcessTests {
  @Test("a child reaped by someone else has an unknown status, never exit code 0")
  func reapedElsewhere() async throws {
    let child = try ChildProcess.spawn(
      executable: "/bin/sh", arguments: ["/bin/sh", "-c", "exit 0"], environment: [], workingDirectory: "/", tailCapacity: 1024)
    // What SIGCHLD ignored (the kernel reaps) or a `waitpid(-1, …)` elsewhere in the process does.
    var status: Int32 = 0
    #expect(waitpid(child.pid, &status, 0) == child.pid)
    let termination = await child.waitForTermination()
    #expect(termination.rawStatus == nil)
    #expect(termination.exitCode == nil)
  }

  @Test("a stop that comes after the leader exited on its own (not yet reaped) is not sent: the run keeps its own outcome")
  func stopAfterTheLeaderExited() async throws {
    let child = try ChildProcess.spawn(
      executable: "/bin/sh", arguments: ["/bin/sh", "-c", "exit 0"], environment: [], workingDirectory: "/", tailCapacity: 1024)
    // Until it is reaped (by the monitor, not started yet) the leader stays a zombie: wait,
    // on a thread of its own, for it to exit without reaping it.
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      Thread {
        var info = siginfo_t()
        _ = waitid(P_PID, id_t(child.pid), &info, WEXITED | WNOWAIT)
        continuation.resume()
      }.start()
    }
    #expect(!child.signalGroup(SIGTERM))
    let termination = await child.waitForTermination()
    #expect(!termination.wasSignalled)
    #expect(termination.exitCode == 0)
  }

  @Test("the fallback for C libraries without closefrom marks the descriptors it is given close-on-exec")
  func closeOnExecFallback() throws {
    let fd = open("/dev/null", O_RDONLY)  // without O_CLOEXEC, as an inherited one would be
    try #require(fd >= 3)
    defer { close(fd) }
    #expect(fcntl(fd, F_GETFD) & FD_CLOEXEC == 0)
    // Only this test's own descriptor: the flag is process-wide, and marking every descriptor of
    // the test process would also strip, from a child another test is spawning at that moment,
    // a descriptor it must inherit (Foundation's `Process` learns of a child's exit through one).
    ChildProcess.markDescriptorsCloseOnExec(fd...fd)
    #expect(fcntl(fd, F_GETFD) & FD_CLOEXEC != 0)
  }

  @Test("no child is spawned while a file to be executed is open for writing (it would hold the descriptor: ETXTBSY)")
  func spawnsWaitWhileAnExecutableIsWritten() async throws {
    // Blocking waits, all on threads of their own.
    let (heldOff, child) = await withCheckedContinuation { (continuation: CheckedContinuation<(Bool, ChildProcess?), Never>) in
      Thread {
        let writing = DispatchSemaphore(value: 0)
        let written = DispatchSemaphore(value: 0)
        let spawned = DispatchSemaphore(value: 0)
        Thread {
          ChildProcess.withNoChildBeingSpawned {
            writing.signal()
            written.wait()
          }
        }.start()
        writing.wait()
        let child = Mutex<ChildProcess?>(nil)
        Thread {
          let started = try? ChildProcess.spawn(
            executable: "/bin/true", arguments: ["/bin/true"], environment: [], workingDirectory: "/", tailCapacity: 16)
          child.withLock { $0 = started }
          spawned.signal()
        }.start()
        // Bounded: a spawn that is not held off is done within milliseconds.
        let heldOff = spawned.wait(timeout: .now() + .milliseconds(500)) == .timedOut
        written.signal()
        if heldOff { spawned.wait() }
        continuation.resume(returning: (heldOff, child.withLock { $0 }))
      }.start()
    }
    #expect(heldOff)
    let spawned = try #require(child)
    #expect(await spawned.waitForTermination().exitCode == 0)
  }

  @Test("the exit status of a child is its own")
  func exitStatus() async throws {
    let child = try ChildProcess.spawn(
      executable: "/bin/sh", arguments: ["/bin/sh", "-c", "echo out; exit 7"], environment: [], workingDirectory: "/", tailCapacity: 1024)
    let termination = await child.waitForTermination()
    #expect(termination.exitCode == 7)
    #expect(termination.outputTail == Array("out\n".utf8))
    #expect(!termination.wasSignalled)
  }
}
