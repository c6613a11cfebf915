package androidx.appcompat.app
open class AppCompatActivity : androidx.activity.ComponentActivity()
