@file:Suppress("unused", "UNUSED_PARAMETER")
package androidx.lifecycle
interface LifecycleOwner
abstract class LifecycleCoroutineScope : kotlinx.coroutines.CoroutineScope
val LifecycleOwner.lifecycleScope: LifecycleCoroutineScope get() = TODO()
