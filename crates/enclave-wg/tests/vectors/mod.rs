//! The datagrams of the known-answer test against wireguard-go v0.0.20220316
//! (`tests/wireguard_go_vectors.rs`), which the fuzz target `decapsulate` also starts from.
//!
//! They were captured once in a private network namespace: wireguard-go on `wgcap0`
//! (10.99.0.1/24, private key 32 bytes of 0x22) talked over 127.0.0.1 to two `Device`s driven
//! by a small program with the seeded `TestRng` of the simulator. In the first exchange our
//! device (key 0x11…, seed 7) initiated and sent an ICMP echo request; wireguard-go answered
//! the handshake and returned the echo reply. In the second, wireguard-go initiated towards our
//! device (key 0x33…, seed 8) to carry a `ping` from the namespace. In the third, wireguard-go
//! initiated towards the same device under load: it got a cookie reply, and its retry five
//! seconds later carried a mac2 made with that cookie.

// Each user takes a different part of the vectors.
#![allow(dead_code)]

pub const WIREGUARD_GO_PUBLIC: &str = "D6poTtKIZ7l/Smot7l34zpdOdrcBjj8iocTPJnhXDyA=";

// Exchange 1: we initiate.
pub const ECHO_REQUEST: &[&str] = &[
    "4500002e00014000400126060a6300020a63000108007b2412340001656e636c6176652d77672069",
    "6e7465726f70",
];
pub const OUR_INITIATION: &[&str] = &[
    "01000000e4e1cb632c2727dfaf2bb595cc4f8ae4dfc5b37725658c656d9dad43317d0730f12bf27c",
    "5a61309433d9302036cb282e8c19208fbeff9e80c889ada7750b4b8678f5065ad2335b7884318545",
    "f4889cee1cd951593e216c1bb85a8bf4348c7833c5b6e41245b1ffb968c334482db1cd9820debd37",
    "9628e4ad593535190a559d7d00000000000000000000000000000000",
];
pub const THEIR_RESPONSE: &[&str] = &[
    "02000000961d00c0e4e1cb63ec14a741dd6f29debff1c1937c8780be3789d996f64ab715626c9884",
    "c48afd17ca39ea5cb6621bb4f2235185ae03ba46c43fdd7c9c1550a47db2daa06fdf091100000000",
    "000000000000000000000000",
];
pub const OUR_TRANSPORT: &[&str] = &[
    "04000000961d00c00000000000000000cc9839b321dafbbf8849556d4eadedcc8a8c7523c3aa65ac",
    "006b6dfd4fec1dcafbddb9f5e3c23d584fddf03ea158357ad97bc5544a5b08cfa320c3b9d5412ba0",
];
pub const THEIR_TRANSPORT: &[&str] = &[
    "04000000e4e1cb6300000000000000004d11b96d1b30f25699ca68de2dad7682598ec0c3c1b71923",
    "e09e39b486f79c1a8b79689d89785bc6cce1e11352ed4cedabc9c00a0aaf75a84f3b1c8c60ea57b7",
];
pub const ECHO_REPLY: &[&str] = &[
    "4500002e0676000040015f910a6300010a6300020000832412340001656e636c6176652d77672069",
    "6e7465726f70",
];

// Exchange 2: wireguard-go initiates.
pub const THEIR_INITIATION: &[&str] = &[
    "01000000050b90512efa0f820a26e50a2aab0e4428d1c84efc672c4a0f3e3243ddfc2ee3b29e5924",
    "200825a4328d6462c173a6e6cbaa73c14040c94c7cd52739e7b833040edd98a82ddf877ae0276af7",
    "ceb90d10e2708e7e0911e731db056022385d208c5eb38bf0d366f15b1b8ded955842023df5cdb119",
    "4450098ebbe1c9bb19b54ee300000000000000000000000000000000",
];
pub const OUR_RESPONSE: &[&str] = &[
    "02000000b051569e050b9051d0d173f12e53b8cbde77952a2e3f2b4fa34f7029021a30dfd0ad3520",
    "b5b91d2f7336ea918ab2aac802610b57b442dc112baaaf71a88fc8893583e27df7e2f40500000000",
    "000000000000000000000000",
];
pub const THEIR_TRANSPORT_2: &[&str] = &[
    "04000000b051569e000000000000000089c1c85de7673cf3159b869c5c1ed1d66e4d1b5133c24426",
    "4d40da1a105cc90d1a7d606eb2f4613e71725708cfe11f4cb7f5cd322eb77d8decf4bce0ad85b562",
    "fb0702926040a37fee511561e9a23f24525b379fb3936bb7f4b09bda50d655155e38709a0d71dec4",
    "7c672cf031bcd641",
];
pub const THEIR_ECHO_REQUEST: &[&str] = &[
    "450000540c904000400119500a6300010a63000308006ad8646c000132fb086b00000000aa1f0600",
    "00000000636c617665656e636c617665656e636c617665656e636c617665656e636c617665656e63",
    "6c617665",
];

// Exchange 3: wireguard-go initiates while our device is under load.
pub const LOADED_FIRST_INITIATION: &[&str] = &[
    "01000000394349af7ddf590dd72cee01b8f6f0d0cf47ebc317d786ec36216bd72742e1c2d42d1555",
    "a18a19fa2efcd0859ac89ecf413e68f2ec570b4656f37f8c0dfd76333d8a5e0eef88d42ca4df1661",
    "2d463ca6146ee23e8e881f98e8cb5c8c3d34019041704954105e75b1a684d84f8b235ef81bbf6e7c",
    "6998f8346a14f014c06aa73600000000000000000000000000000000",
];
pub const OUR_COOKIE_REPLY: &[&str] = &[
    "03000000394349afca448763fd5d561010c08a560864f75f2bd6b5ed943342f43c53d0798cbebdd1",
    "7cb562b1df7497d7ebbea76a1600eb1c28c409632421df7a",
];
pub const LOADED_SECOND_INITIATION: &[&str] = &[
    "0100000031627aec7ec963a20d9447694f09047339c8f949b806a99e8000482316a5db9b8b84a921",
    "fb7431cb2a0f2193236f628009b038d153dfd63dee652bfe27c05c0fad10c734d48d066d16e374f6",
    "cb57422c249730600e1db89d7eb943f6a7758ca3a648e9768cb44e164cab7085fd5f50cd45f6f545",
    "c09ee01116e2053482ed164b113562caf50aadb857c8755ebb45d057",
];
pub const LOADED_OUR_RESPONSE: &[&str] = &[
    "020000006d325f5b31627aec986e891386a66b29cff484b48d89bee9925d89bfe4ce31d6ffaef6d7",
    "a7de4a4907b82853e31329c54412d1da40d82a00ce563dac34192df4bfbca22a7d50aa2b00000000",
    "000000000000000000000000",
];
pub const LOADED_THEIR_TRANSPORT: &[&str] = &[
    "040000006d325f5b000000000000000098341365d64335abcd954cd4e8832753b1401c275a3f825c",
    "8665f45f13e6ec264330edcbaa9efe3ffde1d51ad18ad41ffb8f3f108de88981d7df9e4cb09ee9c7",
    "88644012839c9e172820d28608ee032b6dacf5c78e4596d33a8a4e136ae22e5850f0ff5aead1abe1",
    "4af16145f929ddba",
];
pub const LOADED_ECHO_REQUEST: &[&str] = &[
    "450000546e6a40004001b7750a6300010a6300030800fe2a38540001e700096b000000008cdf0700",
    "00000000636c617665656e636c617665656e636c617665656e636c617665656e636c617665656e63",
    "6c617665",
];

/// The bytes of a datagram written as hex in chunks.
pub fn bytes(chunks: &[&str]) -> Vec<u8> {
    let text: String = chunks.concat();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}
