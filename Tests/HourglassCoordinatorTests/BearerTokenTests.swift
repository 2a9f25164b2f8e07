import Foundation
import HourglassCertificates
import HourglassCoordinator
import HourglassCore
import HourglassProto
import HourglassRPC
import HourglassStoreSQLite
import HourglassTransport
import Logging
import ServiceLifecycle
import SwiftProtobuf
import Testing

/// Users' bearer tokens, over real TLS: who the caller is when a certificate and a token disagree,
/// or when only a token names the user.
@Suite("Bearer tokens over TLS")
struct BearerTokenTests {
  static let aliceToken = "alice-token-0123456789abcdef"

  @Test("the tokens file: clear tokens, sha256 digests, comments; bad lines are named")
  func parse() throws {
    let digest = BlobDigest(of: Array("bob-token-0123456789abcdef".utf8)).hex
    let tokens = try BearerTokens.parse("# users\n\(Self.aliceToken) alice\n\nsha256:\(digest)\tbob\n")
    #expect(tokens.count == 2)
    #expect(tokens.user(forToken: Self.aliceToken) == "alice")
    #expect(tokens.user(forToken: "bob-token-0123456789abcdef") == "bob")
    #expect(tokens.user(forToken: "nobody-0123456789abcdef") == nil)
    #expect(throws: ConfigurationError.self) { try BearerTokens.parse("onlyonefield\n") }
    #expect(throws: ConfigurationError.self) { try BearerTokens.parse("short alice\n") }
    #expect(throws: ConfigurationError.self) { try BearerTokens.parse("\(Self.aliceToken) alice\n\(Self.aliceToken) bob\n") }
  }

  @Test("identity from a user certificate, or from a token with a client certificate", .timeLimit(.minutes(3)))
  func identities() async throws {
    var logger = Logger(label: "test.tokens")
    logger.logLevel = .critical
    let directory = NSTemporaryDirectory() + "hourglass-tokens-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let ca = try DevelopmentCA()
    let store = try await SQLiteTaskStore(configuration: .defaults(path: directory + "/tasks.db"), logger: logger)
    var configuration = CoordinatorConfiguration.defaults
    configuration.tokens = BearerTokens([Self.aliceToken: "alice"])
    let coordinator = try Coordinator(
      configuration: configuration, store: store,
      tls: .init(
        host: "127.0.0.1", port: 0,
        credentials: try ca.credentials(name: "coordinator", role: .coordinator, dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])), logger: logger)
    let services = ServiceGroup(services: [coordinator], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await services.run() }
      let port = try #require(try await coordinator.port())
      func client(_ credentials: TLSCredentials) throws -> RPCClient {
        RPCClient(transport: try RPCTLSConnection(configuration: .init(host: "127.0.0.1", port: port, credentials: credentials), logger: logger))
      }
      let gateway = try client(try ca.credentials(name: "cli", role: .client))
      let bob = try client(try ca.credentials(name: "bob", role: .user))
      let aliceByCertificate = try client(try ca.credentials(name: "alice", role: .user))
      let executor = try client(try ca.credentials(name: "executor-1", role: .executor))

      // A client certificate with alice's token schedules as alice.
      let id = try await schedule(gateway, token: Self.aliceToken)
      #expect(try await get(aliceByCertificate, id).task.taskID == id)
      #expect(try await get(gateway, id, token: Self.aliceToken).task.taskID == id)
      // Bob's certificate does not see it.
      await expectCode(.notFound) { _ = try await get(bob, id) }
      // A client certificate without a token, or with an unknown one: unauthenticated.
      await expectCode(.unauthenticated) { _ = try await schedule(gateway, token: nil) }
      await expectCode(.unauthenticated) { _ = try await schedule(gateway, token: "wrong-token-0123456789abcdef") }
      await expectCode(.unauthenticated) { _ = try await schedule(gateway, token: Self.aliceToken, scheme: "Basic") }
      // A user certificate with another user's token: the credentials disagree.
      await expectCode(.unauthenticated) { _ = try await schedule(bob, token: Self.aliceToken) }
      // The same user's certificate and token agree.
      _ = try await schedule(aliceByCertificate, token: Self.aliceToken)
      // The token's user must match user_id.
      await expectCode(.permissionDenied) { _ = try await schedule(gateway, token: Self.aliceToken, userID: "bob") }
      // An executor's certificate cannot act as a user, token or not.
      await expectCode(.permissionDenied) { _ = try await schedule(executor, token: Self.aliceToken) }

      await services.triggerGracefulShutdown()
      try await group.waitForAll()
    }
    try await store.close()
  }

  private func options(_ token: String?, scheme: String = "Bearer") -> CallOptions {
    var metadata = Metadata()
    if let token { metadata.add("authorization", "\(scheme) \(token)") }
    return CallOptions(metadata: metadata)
  }

  private func schedule(_ client: RPCClient, token: String?, scheme: String = "Bearer", userID: String = "") async throws -> String {
    var request = Hourglass_V1_ScheduleRequest()
    request.userID = userID
    request.operator = "noop"
    request.schedule.once.instant = Google_Protobuf_Timestamp(date: Date().addingTimeInterval(3600))
    let response: Hourglass_V1_ScheduleResponse = try await client.unary(
      MethodDescriptor(service: "hourglass.v1.TaskService", method: "Schedule"), request: request, options: options(token, scheme: scheme))
    return response.taskID
  }

  private func get(_ client: RPCClient, _ id: String, token: String? = nil) async throws -> Hourglass_V1_GetResponse {
    var request = Hourglass_V1_GetRequest()
    request.taskID = id
    return try await client.unary(MethodDescriptor(service: "hourglass.v1.TaskService", method: "Get"), request: request, options: options(token))
  }

  private func expectCode(_ code: StatusCode, _ body: () async throws -> Void) async {
    do {
      try await body()
      Issue.record("expected \(code), the call succeeded")
    } catch let error as RPCError {
      #expect(error.code == code, "\(error)")
    } catch {
      Issue.record("expected \(code), got \(error)")
    }
  }
}
