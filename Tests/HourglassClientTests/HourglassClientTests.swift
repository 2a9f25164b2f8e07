import Foundation
import HourglassCertificates
import HourglassClient
import HourglassCoordinator
import HourglassProto
import HourglassRPC
import HourglassStoreSQLite
import HourglassTransport
import Logging
import ServiceLifecycle
import Synchronization
import Testing

/// A real coordinator on a temporary SQLite file, listening with TLS on loopback.
final class LiveCoordinator: Sendable {
  let directory: String
  let ca: DevelopmentCA
  let coordinator: Coordinator
  let store: SQLiteTaskStore
  let group: ServiceGroup
  let port: Int

  static var quietLogger: Logger {
    var logger = Logger(label: "test.client")
    logger.logLevel = .critical
    return logger
  }

  private init(directory: String, ca: DevelopmentCA, coordinator: Coordinator, store: SQLiteTaskStore, group: ServiceGroup, port: Int) {
    self.directory = directory
    self.ca = ca
    self.coordinator = coordinator
    self.store = store
    self.group = group
    self.port = port
  }

  static func start() async throws -> LiveCoordinator {
    let directory = NSTemporaryDirectory() + "hourglass-client-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let ca = try DevelopmentCA()
    let credentials = try ca.credentials(name: "coordinator", role: .coordinator, ipAddresses: ["127.0.0.1"])
    let store = try await SQLiteTaskStore(configuration: .defaults(path: directory + "/tasks.db"), logger: quietLogger)
    let coordinator = try Coordinator(
      configuration: .defaults, store: store, tls: .init(host: "127.0.0.1", port: 0, credentials: credentials), logger: quietLogger)
    let group = ServiceGroup(services: [coordinator], logger: quietLogger)
    Task { try await group.run() }
    let port = try await coordinator.port() ?? 0
    return LiveCoordinator(directory: directory, ca: ca, coordinator: coordinator, store: store, group: group, port: port)
  }

  func client(user: String, userID: String? = nil) throws -> HourglassClient {
    let credentials = try ca.credentials(name: user, role: .user)
    return try HourglassClient(configuration: .init(host: "127.0.0.1", port: port, credentials: credentials, userID: userID))
  }

  func stop() async {
    await group.triggerGracefulShutdown()
    try? await store.close()
    try? FileManager.default.removeItem(atPath: directory)
  }
}

@Suite("HourglassClient against a coordinator over TLS")
struct HourglassClientTests {
  let script = Array("#!/bin/sh\necho hi\n".utf8)

  @Test("schedule, get, list (paged), runs, delete")
  func lifecycle() async throws {
    let live = try await LiveCoordinator.start()
    let client = try live.client(user: "alice")
    let due = Date().addingTimeInterval(3600)
    var ids: [String] = []
    for index in 0..<5 {
      let task = try await client.schedule(
        TaskDefinition(schedule: .at(due), blob: script, arguments: ["--n", "\(index)"], name: "job-\(index)", priority: index, timeout: .seconds(20)))
      ids.append(task.taskID)
      #expect(abs((task.nextExecution ?? .distantPast).timeIntervalSince(due)) < 0.001)
    }
    let first = try await client.get(ids[0])
    #expect(first.taskID == ids[0])
    #expect(first.status == .scheduled)
    #expect(first.name == "job-0")
    #expect(first.arguments == ["--n", "0"])
    #expect(first.timeout == .seconds(20))
    #expect(first.lastExecuted == nil)
    #expect(first.isRecurring == false)
    if case .at(let date)? = first.schedule?.kind {
      #expect(abs(date.timeIntervalSince(due)) < 0.001)
    } else {
      Issue.record("expected a one-shot schedule, got \(String(describing: first.schedule))")
    }

    var pages: [[TaskDetails]] = []
    for try await page in client.list(pageSize: 2) { pages.append(page) }
    #expect(pages.count >= 3)
    #expect(Set(pages.flatMap { $0 }.map(\.taskID)) == Set(ids))
    #expect(try await client.list(status: .failed).all().isEmpty)

    #expect(try await client.runs(ids[0]).all().isEmpty)
    #expect(try await client.delete(ids[0]) == false)
    do {
      _ = try await client.get(ids[0])
      Issue.record("a deleted task should be gone")
    } catch {
      #expect(error.kind == .notFound)
    }
    #expect(try await client.list().all().count == 4)
    await client.close()
    await live.stop()
  }

  @Test("a recurring cron schedule in a zone round-trips")
  func cronRoundTrip() async throws {
    let live = try await LiveCoordinator.start()
    let client = try live.client(user: "alice")
    var schedule = TaskSchedule.cron("30 2 * * *", timeZone: "America/New_York")
    schedule.misfire = .skip
    schedule.overlap = .allow
    schedule.dstGap = .skip
    schedule.dstOverlap = .both
    let task = try await client.schedule(TaskDefinition(schedule: schedule, blob: script, retry: RetrySettings(maxAttempts: 3)))
    let details = try await client.get(task.taskID)
    #expect(details.schedule?.dstGap == .skip)
    #expect(details.schedule?.dstOverlap == .both)
    #expect(details.isRecurring)
    #expect(details.schedule?.kind == .cron("30 2 * * *"))
    #expect(details.schedule?.timeZone == "America/New_York")
    #expect(details.schedule?.misfire == .skip)
    #expect(details.schedule?.overlap == .allow)
    #expect(details.retry?.maxAttempts == 3)
    await client.close()
    await live.stop()
  }

  @Test("errors are typed: invalid input names the field, another user's task is not found")
  func typedErrors() async throws {
    let live = try await LiveCoordinator.start()
    let alice = try live.client(user: "alice")
    let bob = try live.client(user: "bob")
    do {
      _ = try await alice.schedule(TaskDefinition(schedule: .cron("61 * * * *"), blob: script))
      Issue.record("expected INVALID_ARGUMENT")
    } catch {
      #expect(error.kind == .invalidArgument)
      #expect(error.message.contains("minute"))
    }
    let task = try await alice.schedule(TaskDefinition(schedule: .after(.seconds(3600)), blob: script))
    await #expect(throws: HourglassClientError.self) { try await bob.get(task.taskID) }
    do {
      _ = try await bob.delete(task.taskID)
      Issue.record("expected NOT_FOUND")
    } catch {
      #expect(error.kind == .notFound)
    }
    #expect(try await bob.list().all().isEmpty)
    let impostor = try live.client(user: "bob", userID: "alice")
    do {
      _ = try await impostor.get(task.taskID)
      Issue.record("expected PERMISSION_DENIED")
    } catch {
      #expect(error.kind == .permissionDenied)
    }
    for client in [alice, bob, impostor] { await client.close() }
    await live.stop()
  }

  @Test("UNAVAILABLE is retried with backoff; other failures are not")
  func retriesUnavailableOnly() async throws {
    let calls = Atomic<Int>(0)
    var router = RPCRouter()
    router.registerUnary(MethodDescriptor(service: "hourglass.v1.TaskService", method: "Get")) {
      (request: Hourglass_V1_GetRequest, _) -> Hourglass_V1_GetResponse in
      let count = calls.add(1, ordering: .relaxed).newValue
      if request.taskID == "flaky", count < 3 { throw RPCError(code: .unavailable, message: "try again") }
      if request.taskID == "broken" { throw RPCError(code: .internal, message: "no") }
      var response = Hourglass_V1_GetResponse()
      response.task.taskID = request.taskID
      return response
    }
    let server = RPCServer(router: router, logger: LiveCoordinator.quietLogger)
    let ca = try DevelopmentCA()
    let credentials = TLSCredentials(trustedCAPEM: ca.authority.certificatePEM, certificatePEM: "", privateKeyPEM: "")
    let configuration = HourglassClientConfiguration(
      host: "in-process", port: 1, credentials: credentials, retry: .init(maxAttempts: 3, initialBackoff: .microseconds(1), maxBackoff: .microseconds(1)))
    let client = HourglassClient(configuration: configuration, transport: InProcessTransport(server: server, peer: PeerIdentity(name: "alice", role: "user")))
    #expect(try await client.get("flaky").taskID == "flaky")
    #expect(calls.load(ordering: .relaxed) == 3)
    calls.store(0, ordering: .relaxed)
    do {
      _ = try await client.get("broken")
      Issue.record("expected INTERNAL")
    } catch {
      #expect(error.kind == .other)
      #expect(error.code == .internal)
    }
    #expect(calls.load(ordering: .relaxed) == 1)
  }

  /// A client over the in-process transport to `router`, retrying quickly.
  static func inProcessClient(_ router: RPCRouter, maxAttempts: Int = 3) throws -> HourglassClient {
    let server = RPCServer(router: router, logger: LiveCoordinator.quietLogger)
    let ca = try DevelopmentCA()
    let credentials = TLSCredentials(trustedCAPEM: ca.authority.certificatePEM, certificatePEM: "", privateKeyPEM: "")
    let configuration = HourglassClientConfiguration(
      host: "in-process", port: 1, credentials: credentials,
      retry: .init(maxAttempts: maxAttempts, initialBackoff: .microseconds(1), maxBackoff: .microseconds(1)))
    return HourglassClient(configuration: configuration, transport: InProcessTransport(server: server, peer: PeerIdentity(name: "alice", role: "user")))
  }

  @Test("a retried Schedule sends the same idempotency key every time, so the service makes one task")
  func scheduleRetriesKeepTheirKey() async throws {
    let keys = Mutex<[String]>([])
    var router = RPCRouter()
    router.registerUnary(MethodDescriptor(service: "hourglass.v1.TaskService", method: "Schedule")) {
      (request: Hourglass_V1_ScheduleRequest, _) -> Hourglass_V1_ScheduleResponse in
      let count = keys.withLock { keys in
        keys.append(request.idempotencyKey)
        return keys.count
      }
      if count < 3 { throw RPCError(code: .unavailable, message: "the reply was lost") }
      var response = Hourglass_V1_ScheduleResponse()
      response.taskID = "t-1"
      return response
    }
    let client = try Self.inProcessClient(router)
    #expect(try await client.schedule(TaskDefinition(schedule: .every(.seconds(60)), blob: script)).taskID == "t-1")
    let sent = keys.withLock { $0 }
    #expect(sent.count == 3)
    #expect(Set(sent).count == 1, "one key for every attempt: \(sent)")
    #expect(sent.first?.isEmpty == false)
  }

  @Test("a Delete that reached the service is not sent again: a second one would answer NOT_FOUND for the task it deleted")
  func deleteIsNotRetriedOnceSent() async throws {
    let calls = Atomic<Int>(0)
    var router = RPCRouter()
    router.registerUnary(MethodDescriptor(service: "hourglass.v1.TaskService", method: "Delete")) {
      (_: Hourglass_V1_DeleteRequest, _) -> Hourglass_V1_DeleteResponse in
      calls.add(1, ordering: .relaxed)
      throw RPCError(code: .unavailable, message: "the connection dropped after the delete")
    }
    let client = try Self.inProcessClient(router)
    do {
      try await client.delete("t-1")
      Issue.record("expected UNAVAILABLE")
    } catch {
      #expect(error.kind == .unavailable)
    }
    #expect(calls.load(ordering: .relaxed) == 1)
  }

  @Test("one deadline covers every attempt: retries stop when it has passed")
  func oneDeadlineForAllAttempts() async throws {
    let calls = Atomic<Int>(0)
    var router = RPCRouter()
    router.registerUnary(MethodDescriptor(service: "hourglass.v1.TaskService", method: "Get")) {
      (_: Hourglass_V1_GetRequest, context) -> Hourglass_V1_GetResponse in
      calls.add(1, ordering: .relaxed)
      // Each attempt is told the time left, never more than the call's own deadline.
      if let timeout = context.timeout, timeout > .milliseconds(300) { throw RPCError(code: .internal, message: "given \(timeout)") }
      throw RPCError(code: .unavailable, message: "try again")
    }
    let client = try Self.inProcessClient(router, maxAttempts: 100_000)
    do {
      _ = try await client.get("t-1", timeout: .milliseconds(300))
      Issue.record("expected an error")
    } catch {
      #expect(error.kind == .unavailable || error.kind == .deadlineExceeded, "\(error)")
    }
    // Without one deadline for all attempts, each attempt would have 300 ms of its own, and all
    // 100,000 would be made (each fails at once). With it they stop at 300 ms, thousands at most.
    #expect(calls.load(ordering: .relaxed) < 100_000)
  }

  @Test("a failed TLS handshake (a server the CA did not sign) fails at once, naming the handshake, without retries")
  func tlsFailureIsNotRetried() async throws {
    let live = try await LiveCoordinator.start()
    // The user's certificate and trust come from another CA: the server's certificate fails.
    let stranger = try DevelopmentCA()
    let credentials = try stranger.credentials(name: "alice", role: .user)
    let client = try HourglassClient(
      configuration: .init(
        host: "127.0.0.1", port: live.port, credentials: credentials,
        retry: .init(maxAttempts: 50, initialBackoff: .milliseconds(200), maxBackoff: .milliseconds(200))))
    let started = ContinuousClock.now
    do {
      _ = try await client.get("t-1", timeout: .seconds(60))
      Issue.record("expected the handshake to fail")
    } catch {
      #expect(error.kind == .unavailable)
      #expect(error.message.contains("TLS handshake failed"), "\(error.message)")
    }
    // Fifty attempts 200 ms apart would take ten seconds.
    #expect(ContinuousClock.now - started < .seconds(5))
    await client.close()
    await live.stop()
  }
}
