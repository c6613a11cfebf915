@file:Suppress("unused", "UNUSED_PARAMETER")
package kotlinx.coroutines
import kotlin.coroutines.CoroutineContext
import kotlin.coroutines.EmptyCoroutineContext
interface CoroutineScope { val coroutineContext: CoroutineContext }
interface Job : CoroutineContext.Element
fun CoroutineScope.launch(context: CoroutineContext = EmptyCoroutineContext, block: suspend CoroutineScope.() -> Unit): Job = TODO()
suspend fun <T> withContext(context: CoroutineContext, block: suspend CoroutineScope.() -> T): T = TODO()
abstract class ExecutorCoroutineDispatcher : CoroutineContext.Element, java.io.Closeable
fun java.util.concurrent.ExecutorService.asCoroutineDispatcher(): ExecutorCoroutineDispatcher = TODO()
