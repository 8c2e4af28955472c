// hvmm-guest arm64 head: the Linux arm64 Image header, the MMU-off entry
// of the primary CPU (boot tables, MMU on, jump to the link address) and of
// the secondary CPUs (PSCI CPU_ON), and the EL1 exception vectors.
//
// Assembled through `global_asm!` in aarch64.rs, which substitutes the
// constants named in braces (so braces appear nowhere else in this file).
//
// Registers kept through the primary head (MMU off, no stack):
//   x19  DTB address (x0 at entry)
//   x20  physical address of _start (the load address)
//   x21  CPU index (0 on the primary; the PSCI context id on secondaries)

// A PC-relative address: the physical address while the MMU is off, the
// virtual address once running at the link address.
.macro adr_l reg, sym
    adrp \reg, \sym
    add \reg, \reg, :lo12:\sym
.endm

// Stage-1 descriptors (VMSAv8-64, 4 KiB granule): valid | page, AttrIndx 1
// (Normal WB), AP 00 (EL1 read/write), SH inner, AF -> 0x707; the same as
// a block -> 0x705; a table link -> 3.
.equ PTE_NORMAL_PAGE, 0x707
.equ PTE_NORMAL_BLOCK, 0x705
.equ PTE_TABLE, 3

// ---------------------------------------------------------------------------
// Offset 0: the Linux arm64 Image header (64 bytes).
    .section .text.header, "ax"
    .global _start
_start:
    b primary_entry                 // code0
    .long 0                         // code1
    .quad 0                         // text_offset: a 2 MiB-aligned base + 0
    .quad _image_size               // image_size: bytes used in memory, BSS included
    .quad 0xa                       // flags: little endian, 4 KiB pages, anywhere in RAM
    .quad 0                         // res2
    .quad 0                         // res3
    .quad 0                         // res4
    .ascii "ARM\x64"                // magic
    .long 0                         // res5 (no PE/COFF header)

// ---------------------------------------------------------------------------
// The primary CPU: EL1, MMU off, x0 = DTB.
    .section .text.head, "ax"
primary_entry:
    mov x19, x0
    mov x21, #0
    msr daifset, #0xf
    mrs x0, CurrentEL
    cmp x0, #(1 << 2)
    b.ne wrong_el                   // a guest runs at EL1
    mov x0, #{CPACR_FPEN}           // FP/SIMD not trapped: Rust may use it
    msr cpacr_el1, x0
    isb
    adr_l x20, _start
    bl build_boot_tables
    bl cpu_setup
    ldr x1, =primary_switched
    b enable_mmu

// Zeroes BSS (boot tables and pool included) and builds the boot tables:
// the image at its link address (L0[511] -> L1 -> L2 -> L3, 4 KiB pages)
// and a 1 GiB identity block over the page that turns the MMU on.
build_boot_tables:
    adr_l x0, __pgtables_start
    adr_l x1, _end
0:  stp xzr, xzr, [x0], #16
    cmp x0, x1
    b.lo 0b

    adr_l x0, boot_root
    adr_l x1, boot_img_l1
    orr x1, x1, #PTE_TABLE
    str x1, [x0, #(511 * 8)]
    adr_l x0, boot_img_l1
    adr_l x1, boot_img_l2
    orr x1, x1, #PTE_TABLE
    str x1, [x0]
    adr_l x0, boot_img_l2
    adr_l x1, boot_img_l3
    orr x1, x1, #PTE_TABLE
    str x1, [x0]

    adr_l x0, boot_img_l3
    mov x1, x20                     // PA
    adr_l x2, _end
    mov x3, #PTE_NORMAL_PAGE
1:  orr x4, x1, x3
    str x4, [x0], #8
    add x1, x1, #4096
    cmp x1, x2
    b.lo 1b

    // The identity block of the MMU-enable code. Its L0 slot must not be
    // the image's (511): nothing a guest's RAM could use.
    adr_l x9, enable_mmu
    ubfx x0, x9, #39, #9
    cmp x0, #511
    b.eq wrong_place
    adr_l x1, boot_root
    adr_l x2, boot_id_l1
    orr x2, x2, #PTE_TABLE
    str x2, [x1, x0, lsl #3]
    ubfx x0, x9, #30, #9
    adr_l x1, boot_id_l1
    lsr x2, x9, #30
    lsl x2, x2, #30
    mov x3, #PTE_NORMAL_BLOCK
    orr x2, x2, x3
    str x2, [x1, x0, lsl #3]

    // Tables written with the MMU off went to memory: drop any stale
    // cached copy before the walker reads them through the caches.
    adr_l x0, __pgtables_start
    adr_l x1, __pgtables_end
2:  dc ivac, x0
    add x0, x0, #64
    cmp x0, x1
    b.lo 2b
    dsb sy
    ret

// MAIR, TCR (48-bit VAs through TTBR0, PA size from ID_AA64MMFR0, TTBR1
// walks off), TTBR0 = boot_root; TLBs invalidated.
cpu_setup:
    ldr x0, ={MAIR}
    msr mair_el1, x0
    mrs x1, id_aa64mmfr0_el1
    and x1, x1, #0xf
    cmp x1, #5
    mov x2, #5
    csel x1, x1, x2, ls             // at most 48-bit PAs
    ldr x0, ={TCR}
    orr x0, x0, x1, lsl #32         // IPS
    msr tcr_el1, x0
    adr_l x0, boot_root
    msr ttbr0_el1, x0
    isb
    tlbi vmalle1
    dsb nsh
    isb
    ret

// Turns the MMU and caches on, then branches to x1 (a link address).
enable_mmu:
    ldr x0, ={SCTLR}
    msr sctlr_el1, x0
    isb
    ic iallu
    dsb nsh
    isb
    br x1

// Not at EL1, or loaded where the image's VA slot would clash: nothing can
// be printed yet (the UART is found in the DTB, by Rust). Park.
wrong_el:
wrong_place:
    wfe
    b wrong_el

// A secondary CPU (PSCI CPU_ON): EL1, MMU off, x0 = its CPU index. The
// primary's tables already map this code at its physical address (RAM is
// identity mapped) and at its link address.
    .global secondary_entry
secondary_entry:
    mov x21, x0
    msr daifset, #0xf
    mov x0, #{CPACR_FPEN}
    msr cpacr_el1, x0
    isb
    adr_l x20, _start
    bl cpu_setup
    ldr x1, =secondary_switched
    b enable_mmu

// ---------------------------------------------------------------------------
// At the link address, MMU on.
    .text
primary_switched:
    adr_l x0, guest_vectors
    msr vbar_el1, x0
    isb
    adr_l x0, guest_stacks
    add x0, x0, #{STACK_SIZE}
    mov sp, x0
    mov x0, x19                     // DTB
    mov x1, x20                     // load address
    bl guest_main
0:  wfe
    b 0b

secondary_switched:
    adr_l x0, guest_vectors
    msr vbar_el1, x0
    isb
    adr_l x0, guest_stacks
    mov x1, #{STACK_SIZE}
    add x2, x21, #1
    madd x0, x1, x2, x0
    mov sp, x0
    mov x0, x21
    bl guest_secondary
0:  wfe
    b 0b

// ---------------------------------------------------------------------------
// EL1 exception vectors. Every entry saves x0-x30, ELR and SPSR in a frame on
// the current stack and calls guest_exception(kind, frame); a return means
// the fault was expected: the faulting instruction is skipped.
.macro vector kind
    .balign 0x80
    sub sp, sp, #272
    stp x0, x1, [sp, #0]
    mov x0, #\kind
    b exception_common
.endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global guest_vectors
guest_vectors:
    vector 0
    vector 1
    vector 2
    vector 3
    vector 4
    vector 5
    vector 6
    vector 7
    vector 8
    vector 9
    vector 10
    vector 11
    vector 12
    vector 13
    vector 14
    vector 15

exception_common:
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x9, [sp, #64]
    stp x10, x11, [sp, #80]
    stp x12, x13, [sp, #96]
    stp x14, x15, [sp, #112]
    stp x16, x17, [sp, #128]
    stp x18, x19, [sp, #144]
    stp x20, x21, [sp, #160]
    stp x22, x23, [sp, #176]
    stp x24, x25, [sp, #192]
    stp x26, x27, [sp, #208]
    stp x28, x29, [sp, #224]
    mrs x2, elr_el1
    mrs x3, spsr_el1
    stp x30, x2, [sp, #240]
    str x3, [sp, #256]
    mov x1, sp
    bl guest_exception
    ldp x30, x2, [sp, #240]
    ldr x3, [sp, #256]
    add x2, x2, #4                  // skip the faulting instruction
    msr elr_el1, x2
    msr spsr_el1, x3
    ldp x0, x1, [sp, #0]
    ldp x2, x3, [sp, #16]
    ldp x4, x5, [sp, #32]
    ldp x6, x7, [sp, #48]
    ldp x8, x9, [sp, #64]
    ldp x10, x11, [sp, #80]
    ldp x12, x13, [sp, #96]
    ldp x14, x15, [sp, #112]
    ldp x16, x17, [sp, #128]
    ldp x18, x19, [sp, #144]
    ldp x20, x21, [sp, #160]
    ldp x22, x23, [sp, #176]
    ldp x24, x25, [sp, #192]
    ldp x26, x27, [sp, #208]
    ldp x28, x29, [sp, #224]
    add sp, sp, #272
    eret

// ---------------------------------------------------------------------------
// Boot tables, the table pool and the stacks (all BSS: zeroed by the head).
    .section .pgtables, "aw", %nobits
    .balign 4096
    .global boot_root
boot_root:      .space 4096
boot_img_l1:    .space 4096
boot_img_l2:    .space 4096
boot_img_l3:    .space 4096
boot_id_l1:     .space 4096
    .global table_pool
table_pool:     .space 4096 * {POOL_PAGES}

    .section .bss.guest_stacks, "aw", %nobits
    .balign 16
    .global guest_stacks
guest_stacks:   .space {STACK_SIZE} * {MAX_CPUS}
