@file:Suppress("unused", "UNUSED_PARAMETER")
package org.pytorch.executorch
// signatures as in pytorch/executorch release/1.4 extension/android/.../org/pytorch/executorch/*.kt
open class Module private constructor() : java.io.Closeable {
    open fun forward(vararg inputs: EValue): Array<EValue> = TODO()
    open fun loadMethod(methodName: String) {}
    open fun destroy() {}
    override fun close() = destroy()
    companion object {
        const val LOAD_MODE_FILE = 0
        @JvmStatic @JvmOverloads
        fun load(modelPath: String?, loadMode: Int = LOAD_MODE_FILE, numThreads: Int = 0): Module = TODO()
    }
}
class EValue private constructor() {
    fun toTensor(): Tensor = TODO()
    companion object { @JvmStatic fun from(tensor: Tensor): EValue = TODO() }
}
abstract class Tensor {
    open val dataAsFloatArray: FloatArray get() = TODO()
    companion object { @JvmStatic fun fromBlob(data: FloatArray, shape: LongArray): Tensor = TODO() }
}
