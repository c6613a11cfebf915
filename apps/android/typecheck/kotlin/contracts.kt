@file:Suppress("unused", "UNUSED_PARAMETER")
package androidx.activity.result.contract
class ActivityResultContracts private constructor() {
    open class PickVisualMedia : ActivityResultContract<androidx.activity.result.PickVisualMediaRequest, android.net.Uri?>() {
        sealed interface VisualMediaType
        object ImageOnly : VisualMediaType
        object ImageAndVideo : VisualMediaType
    }
}
