import Foundation
import HourglassCertificates
import HourglassPostgresLauncher
import HourglassProto
import HourglassRPC
import HourglassTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// The cluster as an operator runs it: two `hourglass coordinator` processes on one PostgreSQL,
/// each with `--advertise`, and one `hourglass executor` given only the first.
@Suite(
  "Cluster processes: coordinators announced to executors", .timeLimit(.minutes(3)),
  .enabled(
    if: ThrowawayPostgres.isInstalled || ProcessInfo.processInfo.environment["HOURGLASS_REQUIRE_POSTGRES"] == "1",
    "PostgreSQL is not installed (set HOURGLASS_REQUIRE_POSTGRES=1 to fail instead)"))
struct ClusterProcessTests {
  @Test("an executor given one coordinator finds the other; with the first gone, a run scheduled through the second still runs on it")
  func executorFindsTheAdvertisedCoordinator() async throws {
    let server = try await ThrowawayPostgres.start()
    let setup = try ProcessSetup()
    var children: [TestProcess] = []
    defer {
      for child in children { child.kill() }
      setup.remove()
      // `pg_ctl stop` blocks; not on the cooperative pool, which the other tests need.
      Thread { server.stop() }.start()
    }
    let database = try await server.createDatabase()
    let store = "postgres://\(server.username)@\(server.host):\(server.port)/\(database)"
    var ports: [Int] = []
    // The second first: its row is in the membership by the time the first reads it.
    for id in ["coord-2", "coord-1"] {
      let port = try ThrowawayPostgres.freeLoopbackPort()
      ports.insert(port, at: 0)
      let coordinator = try TestProcess.hourglass([
        "coordinator", "--id", id, "--store", store, "--listen", "127.0.0.1:\(port)", "--advertise", "127.0.0.1:\(port)",
        "--ca", setup.directory + "/ca.pem", "--cert", setup.directory + "/server.pem", "--key", setup.directory + "/server-key.pem",
      ])
      children.append(coordinator)
      try #require(await bounded("\(id) listening") { await coordinator.waitForOutput(containing: "listening") } == true)
    }
    try setup.writeExecutorFiles()
    let executor = try TestProcess.hourglass([
      "executor", "--coordinator", "127.0.0.1:\(ports[0])", "--ca", setup.directory + "/ca.pem",
      "--cert", setup.directory + "/executor.pem", "--key", setup.directory + "/executor-key.pem",
      "--slots", "2", "--operators", "exec", "--temporary-directory", setup.directory,
    ])
    children.append(executor)
    // Never given coord-2's address: it registers there only through coord-1's announcement.
    try #require(
      await bounded("the executor registering with coord-2", seconds: 60) {
        await executor.waitForOutput(containing: "registered with coordinator coord-2")
      } == true)

    // coord-1 leaves (SIGTERM), at once although the executor is connected (it asks the executor
    // to end its stream); a run scheduled through coord-2 can only run on the executor's stream
    // to coord-2, wherever its partition was.
    let first = children[1]
    #expect(await bounded("coord-1 stopping", seconds: 10) { await first.terminate() } == .exited(0))
    let fifo = setup.directory + "/ran.fifo"
    try makeFIFO(fifo)
    let alice = setup.client(user: "alice", port: ports[1])
    let id = try await alice.schedule(once: nil, atNow: true, blob: "#!/bin/sh\necho \"$HOURGLASS_TASK_ID\" > \(fifo)\n")
    let ran = await bounded("the run writing its task id", seconds: 60) { await readFIFOLine(fifo) }
    #expect(ran == id)
    #expect(await bounded("the executor stopping", seconds: 20) { await executor.terminate() } == .exited(0))
  }
}

extension ProcessSetup {
  /// Writes the executor's certificate and key next to the CA, for `hourglass executor`.
  func writeExecutorFiles() throws {
    let executor = try ca.issue(name: "executor-1", role: .executor)
    try executor.certificatePEM.write(toFile: directory + "/executor.pem", atomically: true, encoding: .utf8)
    try executor.privateKeyPEM.write(toFile: directory + "/executor-key.pem", atomically: true, encoding: .utf8)
  }
}
