@file:Suppress("unused", "UNUSED_PARAMETER")
package androidx.activity.result
class PickVisualMediaRequest internal constructor()
fun PickVisualMediaRequest(
    mediaType: androidx.activity.result.contract.ActivityResultContracts.PickVisualMedia.VisualMediaType =
        androidx.activity.result.contract.ActivityResultContracts.PickVisualMedia.ImageAndVideo,
): PickVisualMediaRequest = TODO()
