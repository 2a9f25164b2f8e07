import Foundation
import HourglassTestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// `hourglass executor` as an operator runs it, against a real `hourglass coordinator` process.
@Suite("Executor process", .timeLimit(.minutes(3)))
struct ExecutorProcessTests {
  @Test(
    "hourglass executor --run-as nobody runs exec tasks as nobody",
    .enabled(if: geteuid() == 0, "only root can start tasks as another user"))
  func runAsNobody() async throws {
    let setup = try ProcessSetup()
    defer { setup.remove() }
    let coordinator = try await setup.startCoordinator()
    defer { coordinator.kill() }
    try setup.writeExecutorFiles()
    // The run's directory goes under a folder nobody can traverse, and the task writes its ids
    // into a FIFO nobody can open.
    let runs = setup.directory + "/runs"
    try FileManager.default.createDirectory(atPath: runs, withIntermediateDirectories: false)
    #expect(chmod(setup.directory, 0o711) == 0 && chmod(runs, 0o711) == 0)
    let fifo = setup.directory + "/ids.fifo"
    try makeFIFO(fifo, mode: 0o666)
    #expect(chmod(fifo, 0o666) == 0)
    let executor = try TestProcess.hourglass([
      "executor", "--coordinator", "127.0.0.1:\(coordinator.port)", "--ca", setup.directory + "/ca.pem",
      "--cert", setup.directory + "/executor.pem", "--key", setup.directory + "/executor-key.pem",
      "--slots", "1", "--operators", "exec", "--temporary-directory", runs, "--run-as", "nobody",
    ])
    defer { executor.kill() }
    try #require(await bounded("the executor registering") { await executor.waitForOutput(containing: "registered with coordinator") } == true)
    let alice = setup.client(user: "alice", port: coordinator.port)
    _ = try await alice.schedule(once: nil, atNow: true, blob: "#!/bin/sh\necho \"$(id -u) $(id -g)\" > \(fifo)\n")
    let ids = await bounded("the run writing its ids") { await readFIFOLine(fifo) }
    #expect(ids == "65534 65534", "\(executor.output)")
    #expect(await bounded("the executor stopping", seconds: 20) { await executor.terminate() } == .exited(0))
  }
}
