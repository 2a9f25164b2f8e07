import Foundation
import HourglassCore
import HourglassProto
import HourglassRPC
import HourglassTransport
import Logging
import NIOCore
import NIOPosix
import SwiftProtobuf

/// A client of the Hourglass task service: schedule, inspect, list and delete your tasks.
///
/// One client holds one multiplexed TLS connection, opened on the first call and shared by all
/// calls (reconnecting when needed); it is safe to use from many tasks at once. Calls that fail
/// with UNAVAILABLE are retried with backoff (see ``HourglassClientConfiguration/Retry``);
/// Schedule carries an idempotency key, so a retry never makes a second task. Every call has a
/// deadline: its `timeout` argument or the configuration's default.
///
/// ```swift
/// let client = try HourglassClient(configuration: .init(host: "127.0.0.1", port: 7443, credentials: credentials))
/// let task = try await client.schedule(TaskDefinition(schedule: .cron("*/5 * * * *", timeZone: "Europe/Paris"), blob: binary))
/// print(try await client.get(task.taskID).status)
/// await client.close()
/// ```
public final class HourglassClient: Sendable {
  /// The service's methods.
  enum Method {
    static let service = "hourglass.v1.TaskService"
    static let schedule = MethodDescriptor(service: service, method: "Schedule")
    static let get = MethodDescriptor(service: service, method: "Get")
    static let list = MethodDescriptor(service: service, method: "List")
    static let delete = MethodDescriptor(service: service, method: "Delete")
    static let listRuns = MethodDescriptor(service: service, method: "ListRuns")
  }

  /// The configuration the client was made with.
  public let configuration: HourglassClientConfiguration
  private let rpc: RPCClient
  private let connection: RPCTLSConnection?

  /// Creates a client; nothing is dialled until the first call.
  public init(
    configuration: HourglassClientConfiguration, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
    logger: Logger = Logger(label: "hourglass.client", factory: { _ in SwiftLogNoOpLogHandler() })
  ) throws {
    let connection = try RPCTLSConnection(
      configuration: .init(host: configuration.host, port: configuration.port, serverName: configuration.serverName, credentials: configuration.credentials),
      group: eventLoopGroup, logger: logger)
    self.configuration = configuration
    self.connection = connection
    self.rpc = RPCClient(transport: connection)
  }

  /// Creates a client over another transport (for example an in-process one in tests).
  public init(configuration: HourglassClientConfiguration, transport: any ClientTransport) {
    self.configuration = configuration
    self.connection = nil
    self.rpc = RPCClient(transport: transport)
  }

  /// The executor of the connection's event loop (`nil` over another transport). A task that
  /// makes many calls and does little else can prefer it (`Task(executorPreference:)`): its
  /// calls then start and resume on the connection's thread, with no thread hop.
  public var executor: (any TaskExecutor)? { connection?.executor }

  /// Closes the connection once calls in flight finish.
  public func close() async {
    await connection?.close()
  }

  // MARK: Calls

  /// Schedules a task and returns its id and first run.
  public func schedule(_ task: TaskDefinition, timeout: Duration? = nil) async throws(HourglassClientError) -> ScheduledTask {
    let request = WireConversion.request(task, userID: configuration.userID ?? "", idempotencyKey: task.idempotencyKey ?? IdempotencyKey.generate())
    let response: Hourglass_V1_ScheduleResponse = try await call(Method.schedule, request, timeout: timeout)
    return ScheduledTask(taskID: response.taskID, nextExecution: response.hasNextExecution ? ProtoTime.date(response.nextExecution) : nil)
  }

  /// One of the caller's tasks; ``HourglassClientError/Kind/notFound`` when there is no such
  /// task or it is someone else's.
  public func get(_ taskID: String, timeout: Duration? = nil) async throws(HourglassClientError) -> TaskDetails {
    var request = Hourglass_V1_GetRequest()
    request.userID = configuration.userID ?? ""
    request.taskID = taskID
    let response: Hourglass_V1_GetResponse = try await call(Method.get, request, timeout: timeout)
    return WireConversion.task(response.task)
  }

  /// The caller's tasks, oldest first, page by page, optionally only those with `status`.
  public func list(status: TaskStatus? = nil, pageSize: Int = 100, timeout: Duration? = nil) -> Pages<TaskDetails> {
    Pages { (token: String) async throws(HourglassClientError) -> ([TaskDetails], String) in
      var request = Hourglass_V1_ListRequest()
      request.userID = self.configuration.userID ?? ""
      if let status { request.status = WireConversion.taskStatus(status) }
      request.pageSize = UInt32(clamping: pageSize)
      request.pageToken = token
      let response: Hourglass_V1_ListResponse = try await self.call(Method.list, request, timeout: timeout)
      return (response.tasks.map(WireConversion.task), response.nextPageToken)
    }
  }

  /// Deletes a task so it never runs again. A task whose run is in progress is refused with
  /// ``HourglassClientError/Kind/failedPrecondition`` unless `cancelRunning` is set, which
  /// cancels that run on its executor. Returns whether a run was cancelled.
  @discardableResult
  public func delete(_ taskID: String, cancelRunning: Bool = false, timeout: Duration? = nil) async throws(HourglassClientError) -> Bool {
    var request = Hourglass_V1_DeleteRequest()
    request.userID = configuration.userID ?? ""
    request.taskID = taskID
    request.cancelRunning = cancelRunning
    let response: Hourglass_V1_DeleteResponse = try await call(Method.delete, request, timeout: timeout)
    return response.cancelledRun
  }

  /// A task's runs and attempts, newest first, page by page.
  public func runs(_ taskID: String, pageSize: Int = 100, timeout: Duration? = nil) -> Pages<RunDetails> {
    Pages { (token: String) async throws(HourglassClientError) -> ([RunDetails], String) in
      var request = Hourglass_V1_ListRunsRequest()
      request.userID = self.configuration.userID ?? ""
      request.taskID = taskID
      request.pageSize = UInt32(clamping: pageSize)
      request.pageToken = token
      let response: Hourglass_V1_ListRunsResponse = try await self.call(Method.listRuns, request, timeout: timeout)
      return (response.runs.map(WireConversion.run), response.nextPageToken)
    }
  }

  // MARK: Plumbing

  /// One call, with one deadline for all its attempts: each attempt gets the time left.
  private func call<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ method: MethodDescriptor, _ request: Request, timeout: Duration?
  ) async throws(HourglassClientError) -> Response {
    let clock = ContinuousClock()
    let deadline = clock.now + (timeout ?? configuration.defaultTimeout)
    var options = CallOptions()
    if let token = configuration.bearerToken { options.metadata.add("authorization", "Bearer \(token)") }
    var attempt = 1
    while true {
      let left = deadline - clock.now
      guard left > .zero else {
        throw HourglassClientError(kind: .deadlineExceeded, code: .deadlineExceeded, message: "the call's deadline passed before it could be answered")
      }
      options.timeout = left
      do {
        return try await rpc.unary(method, request: request, responseType: Response.self, options: options)
      } catch  where attempt < configuration.retry.maxAttempts && Self.mayRetry(method, after: error) {
        let delay = configuration.retry.backoff(afterAttempt: attempt, random: Double.random(in: 0...1))
        // No time for another attempt after the wait: the caller learns why the last one failed.
        guard clock.now + delay < deadline else { throw HourglassClientError(error) }
        attempt += 1
        do {
          try await Task.sleep(for: delay)
        } catch {
          throw HourglassClientError(kind: .cancelled, code: .cancelled, message: "cancelled while waiting to retry")
        }
      } catch {
        throw HourglassClientError(error)
      }
    }
  }

  /// Whether a call that failed with `error` may be made again. Only UNAVAILABLE is retried; a
  /// call that may have been carried out only when repeating it changes nothing; one refused by
  /// TLS never (a wrong CA, host name or certificate does not mend itself).
  static func mayRetry(_ method: MethodDescriptor, after error: RPCError) -> Bool {
    guard error.code == .unavailable else { return false }
    if let failed = error.cause as? ConnectionFailed { return !failed.refusedByTLS }
    // Sent, perhaps carried out: a repeated Delete would answer NOT_FOUND for a task it deleted.
    return method != Method.delete
  }
}

/// Results that arrive a page at a time: each element is one page. Iterating asks the service
/// for the next page only when the previous one has been consumed.
///
/// ```swift
/// for try await page in client.list(status: .failed) {
///   for task in page { print(task.taskID) }
/// }
/// ```
public struct Pages<Item: Sendable>: AsyncSequence, Sendable {
  /// One page of results.
  public typealias Element = [Item]
  /// Iteration fails with the call's error.
  public typealias Failure = HourglassClientError

  typealias Fetch = @Sendable (_ pageToken: String) async throws(HourglassClientError) -> ([Item], String)
  private let fetch: Fetch

  init(fetch: @escaping Fetch) {
    self.fetch = fetch
  }

  /// Every item of every page, in order.
  public func all() async throws(HourglassClientError) -> [Item] {
    var items: [Item] = []
    var iterator = makeAsyncIterator()
    while let page = try await iterator.next() { items += page }
    return items
  }

  /// Creates an iterator that starts at the first page.
  public func makeAsyncIterator() -> Iterator { Iterator(fetch: fetch) }

  /// Fetches pages in order until the service says there are no more.
  public struct Iterator: AsyncIteratorProtocol {
    private let fetch: Fetch
    private var token: String? = ""

    init(fetch: @escaping Fetch) {
      self.fetch = fetch
    }

    /// Whether the service said another page follows the ones fetched so far.
    public var hasMore: Bool { token != nil && token != "" }

    /// The next page, or `nil` after the last one.
    public mutating func next() async throws(HourglassClientError) -> [Item]? {
      guard let current = token else { return nil }
      let (items, next) = try await fetch(current)
      token = next.isEmpty ? nil : next
      if items.isEmpty && token == nil && !current.isEmpty { return nil }
      return items
    }
  }
}
