//! Behaviour tests of the emulator through its public surface.
