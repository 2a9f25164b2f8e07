import CHourglassClient
import Crypto
import Foundation
import HourglassCertificates
import HourglassInterop
import HourglassRPC
import HourglassTransport
import Testing

/// The C client (Sources/CHourglassClient) driven through its C API against a Swift server:
/// RPCTLSServer serving a TaskService over hourglass/1 and TLS 1.3 with mutual TLS.
@Suite("C client interop", .serialized, .timeLimit(.minutes(3)))
struct CClientInteropTests {
  static func code(_ value: Int) -> Int32 { Int32(value) }

  @Test("schedule, get, list with page tokens, delete")
  func scheduleGetListDelete() async throws {
    let fixture = try Fixture()
    defer { fixture.remove() }
    let blob = Array("#!/bin/sh\necho from C\n".utf8)
    let expectedSHA = SHA256.hash(data: blob).map { String(format: "%02x", $0) }.joined()

    try await InteropServer.with(router: try await makeTaskService(), credentials: fixture.pki.serverCredentials) { port in
      let outcome = await onThread { () -> [String: String] in
        var notes: [String: String] = [:]
        let (client, connectStatus) = connect(port: port, files: fixture.files)
        guard let client else { return ["connect": message(connectStatus)] }
        defer { hg_close(client) }

        var input = ScheduleInput(kind: .cron("*/5 * * * *"))
        input.blob = blob
        input.arguments = ["--verbose", "two words"]
        let (s1, id1) = schedule(client, input)
        notes["schedule"] = "\(s1.code) \(message(s1))"
        guard let id1 else { return notes }
        notes["id1"] = id1

        let (g, task) = get(client, id1)
        notes["get"] = "\(g.code)"
        if let task {
          notes["task.id"] = task.id
          notes["task.status"] = "\(task.status)"
          notes["task.schedule"] = task.schedule
          notes["task.name"] = task.name
          notes["task.sha"] = task.blobSHA256
          notes["task.args"] = task.arguments.joined(separator: "|")
          notes["task.recurring"] = "\(task.recurring)"
          notes["task.next"] = "\(task.hasNextExecution)"
        }

        // Four more, one of each other kind.
        var ids = [id1]
        for kind in [ScheduleInput.Kind.every(90), .at("2031-02-03T04:05:06Z"), .at("2031-02-03T04:05:00"), .cron("@daily")] {
          let (s, id) = schedule(client, ScheduleInput(kind: kind, timeZone: "Europe/Paris"))
          if s.code != 0 { notes["schedule.more"] = message(s) }
          if let id { ids.append(id) }
        }
        notes["ids"] = ids.joined(separator: ",")

        // Pages of two: 2, 2, 1.
        var token: String? = nil
        var listed: [String] = []
        var pages: [Int] = []
        repeat {
          let (s, tasks, next) = list(client, token: token, pageSize: 2)
          if s.code != 0 {
            notes["list"] = message(s)
            break
          }
          pages.append(tasks.count)
          listed += tasks.map(\.id)
          token = next.isEmpty ? nil : next
        } while token != nil && pages.count < 10
        notes["pages"] = pages.map(String.init).joined(separator: ",")
        notes["listed"] = listed.joined(separator: ",")
        let (_, onePage, _) = list(client, token: nil, pageSize: 0)
        notes["everyKind"] = onePage.map(\.schedule).joined(separator: "|")

        notes["delete"] = "\(delete(client, id1).code)"
        let (afterDelete, _) = get(client, id1)
        notes["getAfterDelete"] = "\(afterDelete.code)"
        notes["deleteAgain"] = "\(delete(client, id1).code)"
        let (_, remaining, _) = list(client, token: nil, pageSize: 0)
        notes["remaining"] = "\(remaining.count)"
        notes["usable"] = "\(hg_is_usable(client))"
        return notes
      }

      #expect(outcome["connect"] == nil)
      #expect(outcome["schedule"] == "0 ")
      let id1 = try #require(outcome["id1"])
      #expect(outcome["get"] == "0")
      #expect(outcome["task.id"] == id1)
      #expect(outcome["task.status"] == "\(HG_TASK_SCHEDULED.rawValue)")
      #expect(outcome["task.schedule"] == "cron */5 * * * * in UTC")
      #expect(outcome["task.name"] == "from-c")
      #expect(outcome["task.sha"] == expectedSHA)
      #expect(outcome["task.args"] == "--verbose|two words")
      #expect(outcome["task.recurring"] == "true")
      #expect(outcome["task.next"] == "true")
      #expect(outcome["schedule.more"] == nil)
      #expect(outcome["list"] == nil)
      #expect(outcome["pages"] == "2,2,1")
      #expect(outcome["listed"] == outcome["ids"])
      #expect(
        outcome["everyKind"]
          == "cron */5 * * * * in UTC|every 90s in Europe/Paris|once at 2031-02-03T04:05:06Z in Europe/Paris|once at 2031-02-03T04:05:00 in Europe/Paris|cron @daily in Europe/Paris"
      )
      #expect(outcome["delete"] == "0")
      #expect(outcome["getAfterDelete"] == "\(HG_NOT_FOUND)")
      #expect(outcome["deleteAgain"] == "\(HG_NOT_FOUND)")
      #expect(outcome["remaining"] == "4")
      #expect(outcome["usable"] == "1")
    }
  }

  @Test("a time that does not exist (31 February, second 60) is refused before sending; 29 February of a leap year is taken")
  func impossibleDatesAreRefused() async throws {
    let fixture = try Fixture()
    defer { fixture.remove() }
    try await InteropServer.with(router: try await makeTaskService(), credentials: fixture.pki.serverCredentials) { port in
      let outcomes = await onThread { () -> [String] in
        let (client, status) = connect(port: port, files: fixture.files)
        guard let client else { return [message(status)] }
        defer { hg_close(client) }
        return ["2031-02-31T09:00:00Z", "2031-02-28T09:00:60Z", "2031-04-31T09:00:00", "2032-02-29T09:00:00Z"].map { text in
          let (s, id) = schedule(client, ScheduleInput(kind: .at(text)))
          return id != nil ? "ok" : "\(s.code)/\(s.local)"
        }
      }
      let refused = "\(Self.code(HG_INVALID_ARGUMENT))/\(Self.code(HG_LOCAL_ARGUMENT))"
      #expect(outcomes == [refused, refused, refused, "ok"])
    }
  }

  @Test("a request larger than a frame is sent in MESSAGE fragments")
  func fragmentedRequest() async throws {
    let fixture = try Fixture()
    defer { fixture.remove() }
    let blob = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    let expectedSHA = SHA256.hash(data: blob).map { String(format: "%02x", $0) }.joined()
    try await InteropServer.with(router: try await makeTaskService(), credentials: fixture.pki.serverCredentials) { port in
      let (scheduled, sha) = await onThread { () -> (String, String?) in
        let (client, status) = connect(port: port, files: fixture.files)
        guard let client else { return (message(status), nil) }
        defer { hg_close(client) }
        var input = ScheduleInput(kind: .every(60))
        input.blob = blob
        let (s, id) = schedule(client, input)
        guard let id else { return (message(s), nil) }
        return ("ok", get(client, id).1?.blobSHA256)
      }
      #expect(scheduled == "ok")
      #expect(sha == expectedSHA)
    }
  }

  @Test("a call past its deadline ends DEADLINE_EXCEEDED and the connection stays usable")
  func deadlineExceeded() async throws {
    let fixture = try Fixture()
    defer { fixture.remove() }
    try await InteropServer.with(router: FakeTaskService().router(), credentials: fixture.pki.serverCredentials) { port in
      let result = await onThread { () -> (Int32, Int32, String, Double, Int32, Int32) in
        // Every call of this client has the deadline, the later List too: long enough for that
        // one to finish on a loaded machine (300 ms was not, once, in a full parallel run).
        let (client, status) = connect(port: port, files: fixture.files, callTimeoutMs: 2_000)
        guard let client else { return (-1, -1, message(status), 0, -1, -1) }
        defer { hg_close(client) }
        let start = Date()
        let (waited, _) = get(client, FakeTaskService.waitTaskID)
        let elapsed = Date().timeIntervalSince(start)
        let (after, _, _) = list(client, token: nil, pageSize: 0)
        return (waited.code, waited.local, message(waited), elapsed, after.code, hg_is_usable(client))
      }
      #expect(result.0 == Self.code(HG_DEADLINE_EXCEEDED), "\(result.2)")
      #expect(result.1 == Self.code(HG_LOCAL_DEADLINE) || result.1 == Self.code(HG_LOCAL_NONE))
      #expect(result.3 >= 1.95 && result.3 < 10, "took \(result.3) s")
      #expect(result.4 == 0, "a later call on the same connection")
      #expect(result.5 == 1)
    }
  }

  @Test("a connection the server closed while idle (unanswered keepalive PINGs) is reopened by the next call")
  func reconnectsAfterIdleClose() async throws {
    let fixture = try Fixture()
    defer { fixture.remove() }
    var connection = RPCConnectionHandler.Configuration.defaults
    connection.keepaliveInterval = .milliseconds(100)
    connection.keepaliveTimeout = .milliseconds(100)
    try await InteropServer.with(router: try await makeTaskService(), credentials: fixture.pki.serverCredentials, connection: connection) { port in
      let result = await onThread { () -> (Int32, Int32, String, Int32, Int32) in
        let (client, status) = connect(port: port, files: fixture.files)
        guard let client else { return (-1, -1, message(status), -1, -1) }
        defer { hg_close(client) }
        let (first, _) = schedule(client, ScheduleInput(kind: .every(60)))
        usleep(1_500_000)  // idle: the server's PINGs go unanswered and it closes the connection
        let (second, _, _) = list(client, token: nil, pageSize: 0)
        let (third, tasks, _) = list(client, token: nil, pageSize: 0)
        return (first.code, second.code, message(second), third.code, Int32(tasks.count))
      }
      #expect(result.0 == 0)
      #expect(result.1 == 0, "\(result.2)")
      #expect(result.3 == 0)
      #expect(result.4 == 1, "the task scheduled on the first connection")
    }
  }

  @Test("a server that closes the connection mid-call gives UNAVAILABLE")
  func serverClosesMidCall() async throws {
    let fixture = try Fixture()
    defer { fixture.remove() }
    try await ScriptedServer.with(credentials: fixture.pki.serverCredentials, behaviour: .closeOnHeaders) { port in
      let result = await onThread { () -> (Int32, Int32, String, Int32) in
        let (client, status) = connect(port: port, files: fixture.files)
        guard let client else { return (-1, -1, "connect: " + message(status), -1) }
        defer { hg_close(client) }
        let (s, _) = get(client, "anything")
        return (s.code, s.local, message(s), hg_is_usable(client))
      }
      #expect(result.0 == Self.code(HG_UNAVAILABLE), "\(result.2)")
      #expect(result.1 == Self.code(HG_LOCAL_CLOSED), "\(result.2)")
      #expect(result.3 == 0)
    }
  }

  @Test("a server certificate from another CA is refused")
  func serverFromAnotherCA() async throws {
    let fixture = try Fixture()
    defer { fixture.remove() }
    let other = try InteropPKI(caName: "Other CA")
    try await InteropServer.with(router: try await makeTaskService(), credentials: other.serverCredentials) { port in
      let (code, local, text) = await onThread { () -> (Int32, Int32, String) in
        let (client, status) = connect(port: port, files: fixture.files)
        if let client { hg_close(client) }
        return (status.code, status.local, message(status))
      }
      #expect(code == Self.code(HG_UNAVAILABLE), "\(text)")
      #expect(local == Self.code(HG_LOCAL_TLS), "\(text)")
      #expect(text.contains("server certificate refused"), "\(text)")
    }
  }

  @Test("a server certificate for another host name is refused")
  func serverForAnotherHost() async throws {
    let fixture = try Fixture()
    defer { fixture.remove() }
    let dnsOnly = try fixture.pki.ca.issue(name: "coordinator-dns", role: .coordinator, dnsNames: ["hourglass.test"])
    let credentials = TLSCredentials(
      trustedCAPEM: fixture.pki.ca.authority.certificatePEM, certificatePEM: dnsOnly.certificatePEM, privateKeyPEM: dnsOnly.privateKeyPEM)
    try await InteropServer.with(router: try await makeTaskService(), credentials: credentials) { port in
      let (code, text) = await onThread { () -> (Int32, String) in
        let (client, status) = connect(host: "127.0.0.1", port: port, files: fixture.files)
        if let client { hg_close(client) }
        return (status.code, message(status))
      }
      #expect(code == Self.code(HG_UNAVAILABLE), "\(text)")
      #expect(text.contains("server certificate refused"), "\(text)")
    }
  }

  @Test("a client certificate from another CA is refused by the server")
  func clientFromAnotherCA() async throws {
    let fixture = try Fixture()
    defer { fixture.remove() }
    let other = try InteropPKI(caName: "Other CA", userName: "mallory")
    let otherFiles = try other.write(to: fixture.directory + "/other")
    // Mallory trusts the real CA for the server, but her certificate is from another CA.
    let files = InteropPKI.Files(
      ca: fixture.files.ca, certificate: otherFiles.certificate, key: otherFiles.key,
      serverCertificate: otherFiles.serverCertificate, serverKey: otherFiles.serverKey)
    try await InteropServer.with(router: try await makeTaskService(), credentials: fixture.pki.serverCredentials) { port in
      let (code, text) = await onThread { () -> (Int32, String) in
        let (client, status) = connect(port: port, files: files)
        guard let client else { return (status.code, message(status)) }
        defer { hg_close(client) }
        let (s, _, _) = list(client, token: nil, pageSize: 0)
        return (s.code, message(s))
      }
      #expect(code == Self.code(HG_UNAVAILABLE), "\(text)")
    }
  }

  @Test("the server's status reaches the caller: user_id not the caller's is PERMISSION_DENIED")
  func serverStatusPassesThrough() async throws {
    let fixture = try Fixture()
    defer { fixture.remove() }
    try await InteropServer.with(router: try await makeTaskService(), credentials: fixture.pki.serverCredentials) { port in
      let (code, local, text) = await onThread { () -> (Int32, Int32, String) in
        let (client, status) = connect(port: port, files: fixture.files, userID: "bob")
        guard let client else { return (-1, -1, message(status)) }
        defer { hg_close(client) }
        let (s, _, _) = list(client, token: nil, pageSize: 0)
        return (s.code, s.local, message(s))
      }
      #expect(code == Self.code(HG_PERMISSION_DENIED), "\(text)")
      #expect(local == Self.code(HG_LOCAL_NONE))
      #expect(text.contains("bob"))
    }
  }

  @Test("nothing listens: UNAVAILABLE from connect")
  func nothingListens() async throws {
    let fixture = try Fixture()
    defer { fixture.remove() }
    // Take a free port and release it.
    let port = try await InteropServer.with(router: try await makeTaskService(), credentials: fixture.pki.serverCredentials) { $0 }
    let (code, local) = await onThread { () -> (Int32, Int32) in
      let (client, status) = connect(port: port, files: fixture.files)
      if let client { hg_close(client) }
      return (status.code, status.local)
    }
    #expect(code == Self.code(HG_UNAVAILABLE))
    #expect(local == Self.code(HG_LOCAL_CONNECT))
  }
}
